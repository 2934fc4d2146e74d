"""The LLM supervisor: the semantic review of a layout that already passed the deterministic checks."""

from __future__ import annotations

from typing import Any

from agents.llm_agent import LLMAgent
from agents.planner import CallRecord, ReviewRequest
from agents.schemas import Review, SupervisorReply


def review_payload(request: ReviewRequest) -> dict[str, Any]:
    plan = request.draft.plan
    return {
        "canvas": {"width": plan.width, "height": plan.height},
        "caption": request.analysis.caption,
        "subjects": [
            {"id": m.id, "name": m.name, "description": m.description, "action": m.action, "parent_id": m.parent_id}
            for m in request.analysis.subjects
        ],
        "relations": [r.model_dump() for r in request.analysis.relations],
        "layout": [
            {
                "subject_id": item.subject_id,
                "phrase": item.phrase,
                "box": [round(v, 1) for v in (item.box.x, item.box.y, item.box.w, item.box.h)],
            }
            for item in plan.items
        ],
        "round": request.round,
    }


class LLMSupervisor(LLMAgent[ReviewRequest, SupervisorReply, Review]):
    name = "supervisor"
    output_model = SupervisorReply

    def payload(self, request: ReviewRequest) -> dict[str, Any]:
        return review_payload(request)

    def validate(self, reply: SupervisorReply, request: ReviewRequest) -> Review:
        if not reply.approve and not reply.feedback.strip():
            raise ValueError("a rejection needs concrete feedback: say which subject to move or resize and how")
        return Review(approve=reply.approve, feedback=reply.feedback.strip(), source="llm")

    def review(self, request: ReviewRequest) -> tuple[Review, list[CallRecord]]:
        return self.call(request)
