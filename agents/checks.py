"""The supervisor's deterministic checks of a layout. Each issue is a concrete instruction for the next
revision, naming the subject ids involved."""

from __future__ import annotations

from agents.planner import LayoutDraft
from agents.schemas import SubjectAnalysis
from agents.vocabulary import noun
from studio.geometry import Box
from studio.plan import TurnPlan
from studio.subjects import family_of, is_component

OVERLAP_LIMIT = 0.9
MIN_AREA_FRACTION = 0.004
SIZE_DRIFT = 4.0


def _size_class(name: str) -> int | None:
    entry = noun(name) or noun(name.split()[-1]) if name else None
    return entry.size if entry else None


def _center(box: Box) -> tuple[float, float]:
    return box.x + box.w / 2, box.y + box.h / 2


def _related(analysis: SubjectAnalysis, a: str, b: str) -> bool:
    """Whether an overlap of a and b is intended (a component and its mother, or 'a on b')."""
    if family_of(a) == family_of(b):
        return True
    return any(r.relation == "on" and {r.subject_id, r.other_id} == {a, b} for r in analysis.relations if r.other_id)


def _spatial(plan: TurnPlan, analysis: SubjectAnalysis, boxes: dict[str, Box]) -> list[str]:
    issues = []
    for rel in analysis.relations:
        a = boxes.get(rel.subject_id)
        if a is None:
            continue
        ax, ay = _center(a)
        b = boxes.get(rel.other_id) if rel.other_id else None
        bx, by = _center(b) if b is not None else (0.0, 0.0)
        ok = {
            "left_of": b is None or ax < bx,
            "right_of": b is None or ax > bx,
            "above": b is None or ay < by,
            "below": b is None or ay > by,
            "left": ax < plan.width / 2,
            "right": ax > plan.width / 2,
            "top": ay < plan.height / 2,
            "bottom": ay > plan.height / 2,
            "center": abs(ax - plan.width / 2) <= plan.width / 4,
            "on": True,
        }[rel.relation]
        if not ok:
            target = f" subject {rel.other_id}" if rel.other_id else " the canvas"
            word = rel.relation.replace("_of", " of")
            issues.append(f"subject {rel.subject_id} must be {word}{target}: move its box accordingly")
    return issues


def check_layout(
    draft: LayoutDraft, analysis: SubjectAnalysis, previous_boxes: dict[str, Box] | None = None
) -> list[str]:
    plan = draft.plan
    boxes = {item.subject_id: item.box for item in plan.items}
    names = {m.id: m.name for m in analysis.subjects}
    issues: list[str] = []
    expected = [m.id for m in analysis.subjects]
    missing = [sid for sid in expected if sid not in boxes]
    extra = [sid for sid in boxes if sid not in names]
    if missing:
        issues.append(f"place every subject of the turn: missing boxes for {missing}")
    if extra:
        issues.append(f"remove boxes of subjects not in this turn: {extra}")
    for sid in draft.clipped:
        issues.append(f"the box of subject {sid} extends outside the {plan.width}x{plan.height} canvas: keep it inside")
    canvas_area = plan.width * plan.height
    for sid, box in boxes.items():
        if box.area < MIN_AREA_FRACTION * canvas_area and not is_component(sid):
            issues.append(f"the box of subject {sid} is too small to draw; enlarge it")
    ids = list(boxes)
    for n, a in enumerate(ids):
        for b in ids[n + 1 :]:
            smaller = min(boxes[a].area, boxes[b].area)
            if boxes[a].intersection(boxes[b]) / smaller > OVERLAP_LIMIT and not _related(analysis, a, b):
                issues.append(f"subjects {a} and {b} almost fully overlap; separate their boxes")
            size_a, size_b = _size_class(names.get(a, "")), _size_class(names.get(b, ""))
            if size_a is None or size_b is None or is_component(a) or is_component(b) or abs(size_a - size_b) < 2:
                continue
            small, big = (a, b) if size_a < size_b else (b, a)
            if boxes[small].area > boxes[big].area:
                issues.append(
                    f"subject {small} ({names[small]}) is drawn larger than subject {big} ({names[big]}); "
                    "make the sizes plausible"
                )
    for sid, previous in (previous_boxes or {}).items():
        box = boxes.get(sid)
        if box is None or is_component(sid):
            continue
        ratio = box.area / previous.area
        if ratio > SIZE_DRIFT or ratio < 1 / SIZE_DRIFT:
            issues.append(
                f"subject {sid} changed size too much since its last turn (was about {previous.w:.0f}x"
                f"{previous.h:.0f} px); keep it close"
            )
    issues += _spatial(plan, analysis, boxes)
    return issues


def score(issues: list[str]) -> int:
    """Lower is better; used to keep the best plan across revisions."""
    return len(issues)
