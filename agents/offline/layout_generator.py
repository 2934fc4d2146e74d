"""The offline layout: subjects side by side on a ground line, ordered and lifted by the spatial words,
sized by their vocabulary class (or their previous box), components inside their mother's box."""

from __future__ import annotations

from agents.planner import LayoutDraft, LayoutRequest
from agents.schemas import SubjectAnalysis, SubjectMention
from agents.vocabulary import noun
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.subjects import Subject

HEIGHT_BY_SIZE = {1: 0.18, 2: 0.32, 3: 0.48, 4: 0.72, 5: 0.86}
GROUND = 0.94
TOP = 0.04
DEFAULT_NEGATIVE = "blurry, low quality, deformed, extra limbs, duplicate, watermark, text"


def _entry(name: str) -> tuple[int, float]:
    """(size class, width/height aspect) of a noun."""
    found = noun(name) or noun(name.split()[-1])
    if found is None:
        return 3, 0.8
    if found.person:
        return found.size, 0.45
    return found.size, 1.5 if found.size >= 4 else 1.0


def _order(analysis: SubjectAnalysis, ids: list[str]) -> list[str]:
    """Left-to-right order honouring left/right words (a few bubble passes suffice for small scenes)."""
    rank = {sid: n for n, sid in enumerate(ids)}
    for rel in analysis.relations:
        if rel.subject_id in rank and rel.relation == "left":
            rank[rel.subject_id] = -100 + rank[rel.subject_id]
        elif rel.subject_id in rank and rel.relation == "right":
            rank[rel.subject_id] = 100 + rank[rel.subject_id]
    order = sorted(ids, key=lambda sid: rank[sid])
    for _ in range(len(order) * len(order)):
        moved = False
        for rel in analysis.relations:
            a, b = rel.subject_id, rel.other_id
            if a not in order or b not in order:
                continue
            ia, ib = order.index(a), order.index(b)
            if (rel.relation == "left_of" and ia > ib) or (rel.relation == "right_of" and ia < ib):
                order[ia], order[ib] = order[ib], order[ia]
                moved = True
        if not moved:
            break
    centers = [r.subject_id for r in analysis.relations if r.relation == "center" and r.subject_id in order]
    if centers and len(order) > 2:
        order.remove(centers[0])
        order.insert(len(order) // 2, centers[0])
    return order


def _lifted(analysis: SubjectAnalysis, ids: list[str]) -> set[str]:
    """Subjects that go in the upper band: above someone, below-ed by someone, or at the top."""
    up: set[str] = set()
    for rel in analysis.relations:
        if rel.relation == "above" or rel.relation == "top":
            up.add(rel.subject_id)
        elif rel.relation == "below" and rel.other_id is not None:
            up.add(rel.other_id)
    return up & set(ids) if len(up & set(ids)) < len(ids) else set()


def _component_box(mother: Box, name: str, index: int) -> Box:
    size, _ = _entry(name)
    worn = name in {"hat", "cap", "crown", "helmet", "glasses", "sunglasses", "mask", "earrings"}
    w = mother.w * (0.45 if worn else 0.4)
    h = mother.h * (0.2 if worn else 0.25) * (1.5 if size >= 3 else 1.0)
    if worn:
        return Box(x=mother.x + (mother.w - w) / 2, y=mother.y, w=w, h=h)
    x = mother.x + mother.w - w if index % 2 == 0 else mother.x
    return Box(x=x, y=mother.y + mother.h * 0.4, w=w, h=h)


def _phrase(mention: SubjectMention, memory: dict[str, Subject]) -> str:
    subject = memory.get(mention.id)
    description = (subject.description if subject else "") or mention.description or mention.name
    text = description if mention.name.lower() in description.lower() else f"{mention.name}, {description}"
    return f"{text}, {mention.action}" if mention.action else text


def offline_layout(request: LayoutRequest) -> LayoutDraft:
    analysis, height, width = request.analysis, request.height, request.width
    memory = {s.id: s for s in request.memory}
    mothers = [m for m in analysis.subjects if m.parent_id is None]
    by_id = {m.id: m for m in analysis.subjects}
    riders = {r.subject_id: r.other_id for r in analysis.relations if r.relation == "on" and r.other_id}
    row_ids = [m.id for m in mothers if m.id not in riders or riders[m.id] not in by_id]
    order = _order(analysis, row_ids)
    lifted = _lifted(analysis, order)
    boxes: dict[str, Box] = {}
    bands = {True: [sid for sid in order if sid in lifted], False: [sid for sid in order if sid not in lifted]}
    sides = {r.subject_id: r.relation for r in analysis.relations if r.relation in {"left", "right"}}
    for up, ids in bands.items():
        if not ids:
            continue
        alone_on_a_side = len(ids) == 1 and ids[0] in sides
        slot = width / (2 if alone_on_a_side else len(ids))
        scale = 0.5 if lifted else 1.0
        for n, sid in enumerate(ids):
            n = 1 if alone_on_a_side and sides[sid] == "right" else n
            size, aspect = _entry(by_id[sid].name)
            h = HEIGHT_BY_SIZE[size] * height * scale
            w = min(h * aspect, slot * 0.92)
            previous = request.previous_boxes.get(sid)
            if previous is not None:
                w, h = min(previous.w, slot * 0.92), min(previous.h, height * scale * 0.95)
            x = slot * n + (slot - w) / 2
            y = TOP * height if up else GROUND * height - h
            if not up and lifted:
                y = max(y, height * 0.5)
                h = min(h, GROUND * height - y)
            boxes[sid] = Box(x=x, y=y, w=w, h=h)
    for rider, base in riders.items():
        if rider in by_id and base in boxes:
            b = boxes[base]
            w, h = b.w * 0.7, b.h * 0.6
            boxes[rider] = Box(x=b.x + (b.w - w) / 2, y=max(0.0, b.y - h * 0.5), w=w, h=h)
    for n, m in enumerate(m for m in analysis.subjects if m.parent_id is not None):
        if m.parent_id in boxes:
            boxes[m.id] = _component_box(boxes[m.parent_id], m.name, n)
    items = [
        PlanItem(subject_id=m.id, phrase=_phrase(m, memory)[:300], box=boxes[m.id], name=m.name)
        for m in analysis.subjects
        if m.id in boxes
    ]
    plan = TurnPlan(
        height=height,
        width=width,
        caption=analysis.caption[:2000],
        background=(analysis.background or "")[:500],
        negative=DEFAULT_NEGATIVE,
        items=items,
    )
    return LayoutDraft(plan=plan)
