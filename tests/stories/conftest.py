"""A story service around a recording drawer: every job a frame sends is kept with the picture it got back, so
tests read which references each round used, at which scale, without models."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.draw import DrawJob, DrawResult
from studio.failures import DrawCancelled
from studio.protocols import StepCallback
from studio.service import TurnService
from studio.stories import Story
from studio.story_runner import StoryRunner
from tests.agents.fakes import png
from tests.api.conftest import make_service


class RecordingDrawer:
    """Draws a flat PNG whose colour numbers the call (call n: (n % 256, n // 256, 7)) and records
    (job, picture) per call. `block_at`: the call with that number waits on `release` (a hung process)."""

    def __init__(self, block_at: int | None = None) -> None:
        self.calls: list[tuple[DrawJob, bytes]] = []
        self.block_at = block_at
        self.blocked = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        with self._lock:
            number = len(self.calls) + 1
        if number == self.block_at:
            self.blocked.set()
            self.release.wait(20)
            if cancel is not None and cancel.is_set():
                raise DrawCancelled
        if on_step is not None:
            on_step(1, 1)
        plan = job.plan
        picture = png(plan.width, plan.height, (number % 256, number // 256, 7))
        with self._lock:
            self.calls.append((job, picture))
        return DrawResult(image=picture, width=plan.width, height=plan.height, seed=job.settings.seed or 0)


def story_service(tmp_path: Path, drawer: RecordingDrawer, **overrides: object) -> TurnService:
    service, _ = make_service(tmp_path, **overrides)
    service.stories = StoryRunner(service, drawer)
    return service


@pytest.fixture
def recorder() -> RecordingDrawer:
    return RecordingDrawer()


@pytest.fixture
def stories(tmp_path: Path, recorder: RecordingDrawer) -> Iterator[TurnService]:
    service = story_service(tmp_path, recorder)
    service.start()
    yield service
    recorder.release.set()
    service.close()


def wait_story(service: TurnService, story_id: str, timeout: float = 30) -> Story:
    assert service.stories is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        story = service.stories.store.get(story_id, with_frames=True)
        assert story is not None
        if story.status.finished:
            return story
        time.sleep(0.01)
    raise AssertionError(f"story {story_id} did not finish")
