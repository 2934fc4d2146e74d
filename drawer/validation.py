"""Checks that turn a job the model cannot draw into a DrawError with a message fit for the user."""

from __future__ import annotations

from studio.draw import DrawJob
from studio.failures import DrawError


def check_job(job: DrawJob, *, max_side: int, size_factor: int, max_subjects: int) -> None:
    plan = job.plan
    for name, side in (("height", plan.height), ("width", plan.width)):
        if side > max_side:
            raise DrawError(f"canvas {name} {side} exceeds this model's maximum of {max_side} pixels")
        if side % 8 or side % size_factor:
            step = max(8, size_factor)
            raise DrawError(f"canvas {name} {side} must be a multiple of {step} pixels for this model")
    if len(plan.items) > max_subjects:
        raise DrawError(f"{len(plan.items)} subjects in one turn; at most {max_subjects} are supported")
