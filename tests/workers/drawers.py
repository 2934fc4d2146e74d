"""Drawers for worker processes started by the tests (`STUDIO_DRAWER__FACTORY=tests.workers.drawers:…`)."""

from __future__ import annotations

import os
import threading
import time

from studio.draw import DrawJob, DrawResult
from studio.failures import DrawCancelled, DrawError
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
