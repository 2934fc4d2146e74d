"""Which detection is which planned subject. Pure numpy/scipy: no models.

Rules (the fixes of AutoStudio's bookkeeping, notes §6.6):
- a subject takes, among the detections of its own name, the one with the best score × IoU with its
  planned box, never simply the first hit;
- several subjects of one name share that name's detections by optimal assignment
  (`scipy.optimize.linear_sum_assignment`: the most subjects found, then the largest total score × IoU),
  so the order they are listed in is irrelevant;
- a component ("1-1") is looked for only among detections lying inside its parent's matched box, scored
  against where its planned box falls once the parent's planned box is mapped onto the detected one;
- a subject with no acceptable detection is reported missing with a reason; no detection is ever
  handed to two subjects, so one miss cannot shift the others' masks.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import linear_sum_assignment

from studio.geometry import Box
from studio.protocols import LocateTarget
from studio.subjects import parent_of

COMPONENT_IOU_FLOOR = 0.05
"""Added to a component candidate's IoU so that, inside its parent, a candidate with no overlap with the
expected box still ranks by score instead of scoring 0."""


class Detection(BaseModel):
    """One detector hit: the query label it belongs to, its box in image pixels, its confidence."""

    model_config = ConfigDict(frozen=True)

    label: str
    box: Box
    score: float = Field(ge=0.0, le=1.0)


class MatchSettings(BaseModel):
    min_iou: float = Field(
        default=0.1, ge=0.0, le=1.0, description="a subject's detection must overlap its planned box at least this much"
    )
    min_inside_parent: float = Field(
        default=0.6, ge=0.0, le=1.0, description="fraction of a component's box that must lie inside its parent's box"
    )
    nms_iou: float = Field(default=0.7, gt=0.0, le=1.0, description="same-label boxes overlapping more are duplicates")


class Match(BaseModel):
    """The outcome for one target: the detection it got, or why it got none."""

    subject_id: str
    detection: Detection | None = None
    iou_with_plan: float = 0.0
    reason: str | None = None

    @property
    def found(self) -> bool:
        return self.detection is not None


def normalize_name(name: str) -> str:
    """The query form of a subject name: lower case, single spaces, no '.' (the prompt's separator)."""
    text = re.sub(r"[.\s]+", " ", name.lower()).strip()
    return text or name.strip().lower()


def nms(detections: list[Detection], iou_threshold: float) -> list[Detection]:
    """Per-label non-maximum suppression, best score first; the result is sorted by descending score."""
    kept: list[Detection] = []
    for det in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(k.label != det.label or k.box.iou(det.box) <= iou_threshold for k in kept):
            kept.append(det)
    return kept


def map_box(box: Box, source: Box, target: Box) -> Box:
    """`box` expressed relative to `source`, re-expressed relative to `target` (shift and scale)."""
    sx, sy = target.w / source.w, target.h / source.h
    return Box(x=target.x + (box.x - source.x) * sx, y=target.y + (box.y - source.y) * sy, w=box.w * sx, h=box.h * sy)


def match_targets(
    targets: list[LocateTarget], detections: list[Detection], settings: MatchSettings | None = None
) -> dict[str, Match]:
    """Assign detections to targets; every target id gets a Match (found or with a reason)."""
    settings = settings or MatchSettings()
    ids = {t.subject_id for t in targets}
    used: set[int] = set()
    out: dict[str, Match] = {}

    def parent(t: LocateTarget) -> str | None:
        pid = t.parent_id or parent_of(t.subject_id)
        return pid if pid in ids and pid != t.subject_id else None

    mothers = [t for t in targets if parent(t) is None]
    components = [t for t in targets if parent(t) is not None]

    groups: dict[str, list[LocateTarget]] = defaultdict(list)
    for t in mothers:
        groups[normalize_name(t.name)].append(t)
    for name, group in groups.items():
        out.update(_assign_mothers(name, group, detections, used, settings))

    comp_groups: dict[tuple[str, str], list[LocateTarget]] = defaultdict(list)
    planned = {t.subject_id: t.planned_box for t in targets}
    for t in components:
        comp_groups[(parent(t) or "", normalize_name(t.name))].append(t)
    # a component of a component (not produced by the id scheme, but harmless) waits for its parent
    for (pid, name), group in sorted(comp_groups.items(), key=lambda kv: kv[0][0].count("-")):
        parent_match = out.get(pid)
        if parent_match is None or parent_match.detection is None:
            for t in group:
                out[t.subject_id] = Match(subject_id=t.subject_id, reason=f"its parent {pid!r} was not found")
            continue
        out.update(
            _assign_components(name, group, parent_match.detection.box, planned[pid], detections, used, settings)
        )
    return {t.subject_id: out[t.subject_id] for t in targets}


def _assign(
    group: list[LocateTarget], candidates: list[int], utility: np.ndarray, feasible: np.ndarray
) -> dict[str, int]:
    """Optimal assignment over feasible pairs: as many subjects found as possible, then the largest total
    utility (each feasible pair is worth a bonus larger than any sum of utilities). Returns id → index."""
    if not candidates:
        return {}
    bonus = 2.0 * min(utility.shape) + 1.0  # > any total utility (each pair ≤ 1.05)
    gain = np.where(feasible, bonus + utility, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return {group[r].subject_id: candidates[c] for r, c in zip(rows, cols, strict=True) if feasible[r, c]}


def _assign_mothers(
    name: str, group: list[LocateTarget], detections: list[Detection], used: set[int], settings: MatchSettings
) -> dict[str, Match]:
    candidates = [i for i, d in enumerate(detections) if d.label == name and i not in used]
    iou = np.array([[t.planned_box.iou(detections[i].box) for i in candidates] for t in group]).reshape(
        len(group), len(candidates)
    )
    scores = np.array([detections[i].score for i in candidates])
    assigned = _assign(group, candidates, iou * scores[None, :], iou >= max(settings.min_iou, 1e-9))
    used.update(assigned.values())
    out = {}
    for row, t in enumerate(group):
        if t.subject_id in assigned:
            det = detections[assigned[t.subject_id]]
            out[t.subject_id] = Match(subject_id=t.subject_id, detection=det, iou_with_plan=t.planned_box.iou(det.box))
            continue
        if not candidates:
            reason = f"no {name!r} detected"
        elif not (iou[row] >= max(settings.min_iou, 1e-9)).any():
            best = float(iou[row].max()) if iou.size else 0.0
            reason = (
                f"{len(candidates)} {name!r} detection(s), none overlapping the planned box by IoU ≥ "
                f"{settings.min_iou:g} (best {best:.2f})"
            )
        else:
            others = sorted(s for s in assigned if s != t.subject_id)
            reason = f"the overlapping {name!r} detections fit subjects {others} better"
        out[t.subject_id] = Match(subject_id=t.subject_id, reason=reason)
    return out


def _assign_components(
    name: str,
    group: list[LocateTarget],
    parent_box: Box,
    parent_planned: Box,
    detections: list[Detection],
    used: set[int],
    settings: MatchSettings,
) -> dict[str, Match]:
    candidates = [
        i
        for i, d in enumerate(detections)
        if d.label == name and i not in used and parent_box.contains_fraction(d.box) >= settings.min_inside_parent
    ]
    expected = [map_box(t.planned_box, parent_planned, parent_box) for t in group]
    iou = np.array([[e.iou(detections[i].box) for i in candidates] for e in expected]).reshape(
        len(group), len(candidates)
    )
    scores = np.array([detections[i].score for i in candidates])
    assigned = _assign(group, candidates, (iou + COMPONENT_IOU_FLOOR) * scores[None, :], np.ones_like(iou, dtype=bool))
    used.update(assigned.values())
    out = {}
    for t in group:
        if t.subject_id in assigned:
            det = detections[assigned[t.subject_id]]
            out[t.subject_id] = Match(subject_id=t.subject_id, detection=det, iou_with_plan=t.planned_box.iou(det.box))
        elif not candidates:
            out[t.subject_id] = Match(subject_id=t.subject_id, reason=f"no {name!r} detected inside its parent's box")
        else:
            out[t.subject_id] = Match(
                subject_id=t.subject_id,
                reason=f"the {name!r} detections inside its parent's box went to other components",
            )
    return out
