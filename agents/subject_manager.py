"""The LLM subject manager: which subjects the new message shows, with ids kept stable against memory."""

from __future__ import annotations

from typing import Any

from agents.analysis import check_analysis
from agents.llm import LLMClient
from agents.planner import CallRecord, SubjectRequest
from agents.prompts import load_prompt
from agents.schemas import SubjectAnalysis
from studio.subjects import next_mother_id

AGENT = "subject_manager"
HISTORY_TURNS = 8


def subject_payload(request: SubjectRequest) -> dict[str, Any]:
    return {
        "memory": [
            {"id": s.id, "name": s.name, "description": s.description, "parent_id": s.parent_id} for s in request.memory
        ],
        "previous_picture": request.previous_ids,
        "history": [
            {"turn": entry.turn_index, "message": entry.message}
            for entry in request.history[-HISTORY_TURNS:]
            if entry.message
        ],
        "message": request.message,
        "next_free_id": next_mother_id({s.id for s in request.memory}),
    }


class LLMSubjectManager:
    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm
        self.prompt = load_prompt(AGENT)

    def analyze(self, request: SubjectRequest) -> tuple[SubjectAnalysis, list[CallRecord]]:
        def validated(reply: SubjectAnalysis) -> SubjectAnalysis:
            check_analysis(reply, request.memory, request.max_subjects)
            return reply

        messages = self.prompt.messages(subject_payload(request))
        return self.llm.complete(AGENT, messages, SubjectAnalysis, validated)
