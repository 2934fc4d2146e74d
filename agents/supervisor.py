"""The supervisor: its verdict on each layout (`supervise`: deterministic checks, then the planner's
semantic review; approve, revise, or at the revision bound draw the best layout so far) and the LLM
supervisor that makes the semantic review (`LLMSupervisor`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from agents.checks import check_layout, score
from agents.llm_agent import LLMAgent
from agents.payloads import layout_rows, subject_rows
from agents.planner import CallRecord, LayoutDraft, ReviewRequest
from agents.schemas import Review, SupervisorReply
from studio.geometry import Box
from studio.plan import TurnPlan

if TYPE_CHECKING:  # the graph imports `supervise`; the offline planner must not need the openai client
    pass


Decision = Literal["approve", "revise", "bound"]
SemanticReview = Callable[[ReviewRequest], tuple[Review, list[CallRecord]]]
"""The planner's review of a layout that passed the checks (LLMSupervisor.review, or the offline approval)."""


class BestDraft(BaseModel):
    """The best layout of the turn so far: the fewest issues (a rejection counts one more), ties to the newer."""

    draft: LayoutDraft
    score: int
    round: int


class Verdict(BaseModel):
    """The supervisor's decision on one layout."""

    round: int
    decision: Decision
    """approve: draw it; revise: ask the layout generator again; bound: no revision left, draw the best."""
    review: Review
    best: BestDraft
    plan: TurnPlan | None = Field(default=None, description="the plan to draw (approve, bound); None on revise")
    calls: list[CallRecord] = Field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The review as kept in the turn's `reviews`."""
        return {"round": self.round, **self.review.model_dump(mode="json")}


def supervise(
    semantic_review: SemanticReview,
    request: ReviewRequest,
    previous_boxes: dict[str, Box],
    best: BestDraft | None,
    max_revisions: int,
) -> Verdict:
    """Judge the layout of round `request.round`: the deterministic checks first (their issues are the
    feedback), the semantic review only when they pass; after `max_revisions` rejected rounds, the best
    layout seen is drawn."""
    issues = check_layout(request.draft, request.analysis, previous_boxes)
    calls: list[CallRecord] = []
    if issues:
        review = Review(approve=False, feedback="; ".join(issues), issues=issues, source="checks")
    else:
        review, calls = semantic_review(request)
    current = BestDraft(draft=request.draft, score=score(issues) + (0 if review.approve else 1), round=request.round)
    if best is None or current.score <= best.score:
        best = current
    decision: Decision
    if review.approve:
        decision, plan = "approve", request.draft.plan
    elif request.round >= max_revisions:
        decision, plan = "bound", best.draft.plan
    else:
        decision, plan = "revise", None
    return Verdict(round=request.round, decision=decision, review=review, best=best, plan=plan, calls=calls)

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
