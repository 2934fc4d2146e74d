"""Pieces of the JSON payloads the LLM agents send, shared so that every agent shows the model the same
view of a subject and of a layout."""

from __future__ import annotations

from typing import Any

from agents.schemas import SubjectAnalysis
from studio.geometry import Box
from studio.plan import TurnPlan


def rounded_box(box: Box) -> list[float]:
    """[x, y, w, h] in canvas pixels, one decimal."""
    return [round(v, 1) for v in (box.x, box.y, box.w, box.h)]


def subject_rows(analysis: SubjectAnalysis) -> list[dict[str, Any]]:
    return [
        {"id": m.id, "name": m.name, "description": m.description, "action": m.action, "parent_id": m.parent_id}
        for m in analysis.subjects
    ]


def layout_rows(plan: TurnPlan) -> list[dict[str, Any]]:
    return [{"subject_id": item.subject_id, "phrase": item.phrase, "box": rounded_box(item.box)} for item in plan.items]
