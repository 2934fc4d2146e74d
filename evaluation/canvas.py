"""Fitting a plan to a smaller canvas (quick runs, tests): aspect kept, sides multiples of 8, boxes rescaled."""

from __future__ import annotations

from studio.plan import TurnPlan

_MIN_SIDE = 64


def _side(value: float) -> int:
    return max(_MIN_SIDE, round(value / 8) * 8)


def fit_plan(plan: TurnPlan, max_side: int | None) -> TurnPlan:
    """The plan unchanged if its canvas fits in `max_side`, else scaled down so its longer side is about
    `max_side` (each side rounded to a multiple of 8, at least 64) with every box scaled per axis."""
    if max_side is None or max(plan.height, plan.width) <= max_side:
        return plan
    factor = max_side / max(plan.height, plan.width)
    height, width = _side(plan.height * factor), _side(plan.width * factor)
    sx, sy = width / plan.width, height / plan.height
    items = [item.model_copy(update={"box": item.box.scaled(sx, sy)}) for item in plan.items]
    edit = plan.edit
    if edit is not None:
        edit = edit.model_copy(update={"regenerate_boxes": [b.scaled(sx, sy) for b in edit.regenerate_boxes]})
    data = plan.model_dump()
    data.update(height=height, width=width, items=[i.model_dump() for i in items], edit=edit and edit.model_dump())
    return TurnPlan.model_validate(data)
