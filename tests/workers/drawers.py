"""Drawers for worker processes started by the tests (`STUDIO_DRAWER__FACTORY=tests.workers.drawers:…`)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time

from PIL import Image

from studio.draw import DrawJob, DrawResult
from studio.failures import DrawCancelled, DrawError
from studio.fast_mode import PREVIEW_MAX_BYTES, PreviewImage, preview_sink
from studio.images import decode_image
from studio.protocols import StepCallback
from studio.settings import Settings
from tests.agents.fakes import FakeDrawer

STEP_SECONDS_ENV = "STUDIO_TEST_STEP_SECONDS"
CRASH_ENV = "STUDIO_TEST_CRASH"


class PausingDrawer(FakeDrawer):
    """FakeDrawer with a pause per step (env STUDIO_TEST_STEP_SECONDS), the cancel checked between steps, a
    DrawError for a reference that cannot be decoded, and a process crash when env STUDIO_TEST_CRASH is set."""

    def __init__(self, steps: int, step_seconds: float) -> None:
        super().__init__(steps=steps)
        self.step_seconds = step_seconds

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        if os.environ.get(CRASH_ENV):
            os._exit(3)  # the pool process dies mid-job, as with an out-of-memory kill
        for subject_id, data in job.references.items():
            try:
                decode_image(data)
            except Exception as exc:
                raise DrawError(f"the reference of subject {subject_id} cannot be decoded") from exc
        for _ in range(self.steps):
            if cancel is not None and cancel.is_set():
                raise DrawCancelled
            time.sleep(self.step_seconds)
        return super().draw(job, on_step=on_step, cancel=cancel)


def pausing_drawer(settings: Settings, preset: str) -> PausingDrawer:
    return PausingDrawer(steps=4, step_seconds=float(os.environ.get(STEP_SECONDS_ENV, "0")))


class AnchorEchoDrawer(PausingDrawer):
    """PausingDrawer that returns, for each planned subject, an anchor cache naming the one its job carried
    (`anchor of <id> after <sha256 of the carried blob, 12 hex digits, or none>`): what reached the worker."""

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        result = super().draw(job, on_step=on_step, cancel=cancel)
        carried = job.anchor_caches or {}
        caches = {sid: anchor_echo(sid, carried.get(sid)) for sid in job.plan.subject_ids}
        return result.model_copy(update={"anchor_caches": caches})


def anchor_echo(subject_id: str, carried: bytes | None) -> bytes:
    seen = hashlib.sha256(carried).hexdigest()[:12] if carried is not None else "none"
    return f"anchor of {subject_id} after {seen}".encode()


def anchor_drawer(settings: Settings, preset: str) -> AnchorEchoDrawer:
    return AnchorEchoDrawer(steps=2, step_seconds=0.0)


PREVIEWS_PER_JOB = 3


class PreviewingDrawer(PausingDrawer):
    """PausingDrawer that hands a small JPEG preview per step to the step callback's preview sink (when it has
    one, as the real drawer does), then one over PREVIEW_MAX_BYTES, which the worker must not relay."""

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        sink = preview_sink(on_step)
        if sink is not None:
            for step in range(1, PREVIEWS_PER_JOB + 1):
                sink(preview_image(step, PREVIEWS_PER_JOB))
            oversized = preview_image(PREVIEWS_PER_JOB, PREVIEWS_PER_JOB)
            sink(oversized.model_copy(update={"data": b"\xff" * (PREVIEW_MAX_BYTES + 1)}))
        return super().draw(job, on_step=on_step, cancel=cancel)


def preview_image(step: int, total: int) -> PreviewImage:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (step * 60 % 256, 20, 200)).save(buffer, format="JPEG")
    return PreviewImage(step=step, total=total, width=16, height=16, format="jpeg", data=buffer.getvalue())


def previewing_drawer(settings: Settings, preset: str) -> PreviewingDrawer:
    return PreviewingDrawer(steps=2, step_seconds=0.0)
