"""The three LLM agents behind the Planner interface, sharing one endpoint client."""

from __future__ import annotations

import openai

from agents.layout_generator import LLMLayoutGenerator
from agents.llm import LLMClient
from agents.planner import CallRecord, LayoutDraft, LayoutRequest, ReviewRequest, SubjectRequest
from agents.schemas import Review, SubjectAnalysis
from agents.subject_manager import LLMSubjectManager
from agents.supervisor import LLMSupervisor
from studio.settings import LLMSettings


class LLMPlanner:
    kind = "llm"

    def __init__(self, settings: LLMSettings, client: openai.OpenAI | None = None) -> None:
        self.llm = LLMClient(settings, client)
        self.subject_manager = LLMSubjectManager(self.llm)
        self.layout_generator = LLMLayoutGenerator(self.llm)
        self.supervisor = LLMSupervisor(self.llm)

    def prompt_versions(self) -> dict[str, str]:
        agents = (self.subject_manager, self.layout_generator, self.supervisor)
        return {agent.name: agent.prompt.version for agent in agents}

    def analyze(self, request: SubjectRequest) -> tuple[SubjectAnalysis, list[CallRecord]]:
        return self.subject_manager.analyze(request)

    def layout(self, request: LayoutRequest) -> tuple[LayoutDraft, list[CallRecord]]:
        return self.layout_generator.layout(request)

    def review(self, request: ReviewRequest) -> tuple[Review, list[CallRecord]]:
        return self.supervisor.review(request)

    def close(self) -> None:
        """Close the HTTP connections of the endpoint client."""
        self.llm.client.close()
