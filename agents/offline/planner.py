"""The offline planner: a deterministic, rule-based stand-in for the three LLM agents, used when no LLM
endpoint is configured (settings.llm.base_url is None) and in tests. It reads a small vocabulary of
nouns, pronouns, departures, accessories, backgrounds and left/right/above/below words; it lays subjects
out evenly on a ground line. It makes no network calls and always returns the same plan for the same input."""

from __future__ import annotations

from agents.offline.layout_generator import offline_layout
from agents.offline.subject_manager import analyze_message
from agents.planner import CallRecord, LayoutDraft, LayoutRequest, ReviewRequest, SubjectRequest
from agents.schemas import Review, SubjectAnalysis

OFFLINE_VERSION = "offline-1"


class OfflinePlanner:
    kind = "offline"

    def prompt_versions(self) -> dict[str, str]:
        return {"subject_manager": OFFLINE_VERSION, "layout_generator": OFFLINE_VERSION, "supervisor": OFFLINE_VERSION}

    def analyze(self, request: SubjectRequest) -> tuple[SubjectAnalysis, list[CallRecord]]:
        return analyze_message(request), []

    def layout(self, request: LayoutRequest) -> tuple[LayoutDraft, list[CallRecord]]:
        return offline_layout(request), []

    def review(self, request: ReviewRequest) -> tuple[Review, list[CallRecord]]:
        """Only reached when the deterministic checks passed; the rules have nothing semantic to add."""
        return Review(approve=True, source="offline"), []
