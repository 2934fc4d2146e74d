"""The LLM subject manager: which subjects the new message shows, with ids kept stable against memory."""

from __future__ import annotations

from typing import Any

from agents.analysis import check_analysis
from agents.llm_agent import LLMAgent
from agents.planner import CallRecord, SubjectRequest
from agents.schemas import SubjectAnalysis
from studio.subjects import next_mother_id

HISTORY_TURNS = 8


class LLMSubjectManager(LLMAgent[SubjectRequest, SubjectAnalysis, SubjectAnalysis]):
    name = "subject_manager"
    output_model = SubjectAnalysis

    def payload(self, request: SubjectRequest) -> dict[str, Any]:
        return {
            "memory": [
                {"id": s.id, "name": s.name, "description": s.description, "parent_id": s.parent_id}
                for s in request.memory
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

    def validate(self, reply: SubjectAnalysis, request: SubjectRequest) -> SubjectAnalysis:
        check_analysis(reply, request.memory, request.max_subjects)
        return reply

    def analyze(self, request: SubjectRequest) -> tuple[SubjectAnalysis, list[CallRecord]]:
        return self.call(request)
