"""The LLM supervisor: the semantic review of a layout that already passed the deterministic checks."""

from __future__ import annotations

from typing import Any

from agents.llm import LLMClient
from agents.planner import CallRecord, ReviewRequest
from agents.prompts import load_prompt
from agents.schemas import Review, SupervisorReply

AGENT = "supervisor"


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


def _review(reply: SupervisorReply) -> Review:
    if not reply.approve and not reply.feedback.strip():
        raise ValueError("a rejection needs concrete feedback: say which subject to move or resize and how")
    return Review(approve=reply.approve, feedback=reply.feedback.strip(), source="llm")


class LLMSupervisor:
    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm
        self.prompt = load_prompt(AGENT)

    def review(self, request: ReviewRequest) -> tuple[Review, list[CallRecord]]:
        messages = self.prompt.messages(review_payload(request))
        return self.llm.complete(AGENT, messages, SupervisorReply, _review)
