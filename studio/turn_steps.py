"""The draw and memorize steps of a turn, shared by every engine (the LangGraph graph, the direct
explicit-plan engine, the CMIGBench runner)."""

from __future__ import annotations

import logging
import threading
from typing import Literal

from studio.draw import DrawJob, DrawResult, DrawSettings
from studio.memory import update_memory
from studio.plan import TurnPlan
from studio.protocols import Drawer, ImageStore, StepCallback
from studio.reference_inputs import subject_reference_inputs
from studio.subjects import Subject

log = logging.getLogger(__name__)


def build_draw_job(
    plan: TurnPlan,
    subjects: list[Subject],
    settings: DrawSettings,
    images: ImageStore,
    previous_image_id: str | None = None,
) -> DrawJob:
    """Attach to the plan the stored reference of every planned subject that has one, and, when the turn uses
    shared attention, the stored anchor cache of every planned subject that has one (docs/mechanisms.md)."""
    by_id = {subject.id: subject for subject in subjects}
    references = {}
    for subject_id in plan.subject_ids:
        subject = by_id.get(subject_id)
        if subject is not None and subject.reference_image_id is not None:
            references[subject_id] = images.get(subject.reference_image_id)
    previous = images.get(previous_image_id) if plan.edit is not None and previous_image_id else None
    caches = anchor_caches_of(plan, by_id, images) if "shared_attention" in settings.mechanisms else None
    return DrawJob(
        plan=plan,
        references=references,
        settings=settings,
        previous_image=previous,
        anchor_caches=caches,
        **subject_reference_inputs(plan, by_id, settings, images),
    )


def anchor_caches_of(plan: TurnPlan, by_id: dict[str, Subject], images: ImageStore) -> dict[str, bytes]:
    """The stored anchor cache blob of each planned subject that has one (a blob no longer stored, e.g. one a
    later turn replaced before the session was branched at an older turn, is skipped: the turn records anew)."""
    caches = {}
    for subject_id in plan.subject_ids:
        subject = by_id.get(subject_id)
        if subject is None or subject.anchor_cache_id is None:
            continue
        try:
            caches[subject_id] = images.get(subject.anchor_cache_id)
        except KeyError:  # ImageNotFound
            log.info("subject %s: anchor cache %s is gone; the turn records anew", subject_id, subject.anchor_cache_id)
    return caches


def draw_and_memorize(
    drawer: Drawer,
    job: DrawJob,
    subjects: list[Subject],
    turn_index: int,
    images: ImageStore,
    refresh: Literal["first", "better"] = "first",
    on_step: StepCallback | None = None,
    cancel: threading.Event | None = None,
) -> tuple[DrawResult, list[Subject]]:
    result = drawer.draw(job, on_step=on_step, cancel=cancel)
    images.put(result.image)
    memory = update_memory(
        subjects, job.plan, result.crops, turn_index, images, refresh=refresh, anchor_caches=result.anchor_caches
    )
    return result, memory
