"""The LLM supervisor: the semantic review of a layout that already passed the deterministic checks."""

from __future__ import annotations

from typing import Any

from agents.llm_agent import LLMAgent
from agents.payloads import layout_rows, subject_rows
from agents.planner import CallRecord, ReviewRequest
from agents.schemas import Review, SupervisorReply


class LLMSupervisor(LLMAgent[ReviewRequest, SupervisorReply, Review]):
    name = "supervisor"
    output_model = SupervisorReply

    def payload(self, request: ReviewRequest) -> dict[str, Any]:
        plan = request.draft.plan
        return {
            "canvas": {"width": plan.width, "height": plan.height},
            "caption": request.analysis.caption,
            "subjects": subject_rows(request.analysis),
            "relations": [r.model_dump() for r in request.analysis.relations],
            "layout": layout_rows(plan),
            "round": request.round,
        }

    def validate(self, reply: SupervisorReply, request: ReviewRequest) -> Review:
        if not reply.approve and not reply.feedback.strip():
            raise ValueError("a rejection needs concrete feedback: say which subject to move or resize and how")
        return Review(approve=reply.approve, feedback=reply.feedback.strip(), source="llm")

    def review(self, request: ReviewRequest) -> tuple[Review, list[CallRecord]]:
        return self.call(request)
