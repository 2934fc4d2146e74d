"""The LLM layout generator, and the conversion of any layout reply into a validated TurnPlan."""

from __future__ import annotations

from typing import Any

from agents.llm_agent import LLMAgent
from agents.payloads import layout_rows, rounded_box, subject_rows
from agents.planner import CallRecord, LayoutDraft, LayoutRequest
from agents.schemas import LayoutReply, SubjectAnalysis
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.subjects import Subject

CLIP_TOLERANCE = 0.02


def draft_from_reply(
    reply: LayoutReply, analysis: SubjectAnalysis, memory: list[Subject], height: int, width: int
) -> LayoutDraft:
    """Validate a layout reply: known ids only, positive finite boxes that touch the canvas (clipped to
    it, and reported when clipping cut more than 2 %). Missing subjects are left to the supervisor."""
    names = {m.id: m.name for m in analysis.subjects}
    names.update({s.id: s.name for s in memory if s.id not in names})
    shown = {m.id for m in analysis.subjects}
    unknown = [item.subject_id for item in reply.items if item.subject_id not in shown]
    if unknown:
        raise ValueError(f"items name subjects that are not in this turn: {unknown} (allowed: {sorted(shown)})")
    items, clipped = [], []
    for item in reply.items:
        try:
            raw = Box(x=item.x, y=item.y, w=item.w, h=item.h)
        except ValueError as exc:
            raise ValueError(f"box of subject {item.subject_id!r} is invalid: {exc}") from exc
        inside = raw.clipped(height, width)
        if inside is None:
            raise ValueError(f"box of subject {item.subject_id!r} lies wholly outside the {width}x{height} canvas")
        if inside.area < raw.area * (1 - CLIP_TOLERANCE):
            clipped.append(item.subject_id)
        phrase = item.phrase.strip() or names[item.subject_id]
        items.append(PlanItem(subject_id=item.subject_id, phrase=phrase[:300], box=inside, name=names[item.subject_id]))
    plan = TurnPlan(
        height=height,
        width=width,
        caption=analysis.caption[:2000],
        background=(reply.background or analysis.background or "")[:500],
        negative=(reply.negative.strip() or None) if reply.negative else None,
        items=items,
    )
    return LayoutDraft(plan=plan, clipped=clipped)


class LLMLayoutGenerator(LLMAgent[LayoutRequest, LayoutReply, LayoutDraft]):
    name = "layout_generator"
    output_model = LayoutReply

    def payload(self, request: LayoutRequest) -> dict[str, Any]:
        analysis = request.analysis
        revision = None
        if request.feedback and request.previous_draft is not None:
            revision = {
                "round": request.round,
                "feedback": request.feedback,
                "previous_layout": layout_rows(request.previous_draft.plan),
            }
        shown = {m.id for m in analysis.subjects}
        return {
            "canvas": {"width": request.width, "height": request.height},
            "caption": analysis.caption,
            "background": analysis.background,
            "subjects": subject_rows(analysis),
            "relations": [r.model_dump() for r in analysis.relations],
            "previous_boxes": {sid: rounded_box(box) for sid, box in request.previous_boxes.items() if sid in shown},
            "revision": revision,
        }

    def validate(self, reply: LayoutReply, request: LayoutRequest) -> LayoutDraft:
        return draft_from_reply(reply, request.analysis, request.memory, request.height, request.width)

    def layout(self, request: LayoutRequest) -> tuple[LayoutDraft, list[CallRecord]]:
        return self.call(request)
