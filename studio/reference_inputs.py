"""What the reference controls add to a DrawJob from the subject memory and the settings
(docs/reference_controls.md): each planned subject's further reference images and its memory's controls,
and the style reference's image. Only non-default values are added, so a job without them is unchanged."""

from __future__ import annotations

from typing import Any

from studio.draw import DrawSettings
from studio.plan import TurnPlan
from studio.protocols import ImageStore
from studio.reference_controls import CONTROL_FIELDS, resolve_controls
from studio.subjects import Subject


def subject_reference_inputs(
    plan: TurnPlan, subjects: dict[str, Subject], settings: DrawSettings, images: ImageStore
) -> dict[str, Any]:
    """DrawJob keyword arguments: `more_references`, `reference_controls`, `style_reference` (those set)."""
    out: dict[str, Any] = {}
    more: dict[str, list[bytes]] = {}
    controls = {}
    for subject_id in plan.subject_ids:
        subject = subjects.get(subject_id)
        if subject is None or subject.reference_image_id is None:
            continue
        if subject.more_reference_image_ids:
            more[subject_id] = [images.get(image_id) for image_id in subject.more_reference_image_ids]
        if any(getattr(subject, name) is not None for name in CONTROL_FIELDS):
            controls[subject_id] = resolve_controls(subject)
    if more:
        out["more_references"] = more
    if controls:
        out["reference_controls"] = controls
    if settings.style_reference.image_id is not None:
        out["style_reference"] = images.get(settings.style_reference.image_id)
    return out
