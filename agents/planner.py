"""The interface of the three planning nodes, implemented by the LLM agents and the offline planner."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from agents.schemas import Review, SubjectAnalysis
from studio.geometry import Box
from studio.plan import TurnPlan
from studio.protocols import HistoryEntry
from studio.settings import DEFAULT_MAX_SUBJECTS
from studio.subjects import Subject

CallRecord = dict[str, Any]
"""One LLM request: agent, model, mode, latency_s, prompt/completion/total tokens, repaired, error."""


class SubjectRequest(BaseModel):
    message: str
    turn_index: int
    memory: list[Subject]
    history: list[HistoryEntry] = Field(default_factory=list)
    previous_ids: list[str] = Field(default_factory=list, description="subjects of the previous turn's picture")
    previous_background: str = ""
    max_subjects: int = DEFAULT_MAX_SUBJECTS


class LayoutDraft(BaseModel):
    """A layout and what had to be fixed when turning it into a TurnPlan."""

    plan: TurnPlan
    clipped: list[str] = Field(default_factory=list, description="ids whose box had to be clipped to the canvas")


class LayoutRequest(BaseModel):
    analysis: SubjectAnalysis
    memory: list[Subject] = Field(description="memory with this turn's new subjects and updates")
    height: int
    width: int
    previous_boxes: dict[str, Box] = Field(default_factory=dict, description="last box of each known subject")
    feedback: str | None = None
    previous_draft: LayoutDraft | None = None
    round: int = 0


class ReviewRequest(BaseModel):
    analysis: SubjectAnalysis
    draft: LayoutDraft
    memory: list[Subject]
    round: int = 0


class Planner(Protocol):
    """Subject manager, layout generator and (semantic) supervisor. Each returns its result and the LLM
    calls it made (none for the offline planner)."""

    kind: str

    def prompt_versions(self) -> dict[str, str]: ...

    def analyze(self, request: SubjectRequest) -> tuple[SubjectAnalysis, list[CallRecord]]: ...

    def layout(self, request: LayoutRequest) -> tuple[LayoutDraft, list[CallRecord]]: ...

    def review(self, request: ReviewRequest) -> tuple[Review, list[CallRecord]]: ...
