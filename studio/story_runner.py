"""Runs stories (studio/stories.py) on the turn service's worker pool, one frame per pool task: after each
frame the story queues itself again at the back of the pool, so stories and sessions share the workers fairly
(a long story never holds a worker for more than one frame).

A story is driven by the process holding its lease (renewed at every frame and step); the frames present in
the database are the finished ones, so after a crash or restart the story continues with the first missing frame
of its current round. A cancel is stored on the story: whichever process drives it ends it."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from studio.cancellation import StoredCancel
from studio.failures import DrawCancelled, TurnFailure, clip_reason
from studio.protocols import Drawer
from studio.rejections import RequestRejected
from studio.round_robin import RoundRobin
from studio.storage.images import FileImageStore
from studio.storage.stories import StoryStore
from studio.stories import Story, StoryCreate, StoryStatus, frame_job

if TYPE_CHECKING:
    from studio.service import TurnService

log = logging.getLogger(__name__)



class StoryRunner:
    def __init__(self, service: TurnService, drawer: Drawer, store: StoryStore | None = None) -> None:
        self.service = service
        self.store = store or StoryStore(service.db)
        self.images: FileImageStore = service.images
        self.drawer = drawer
        self._lock = threading.Lock()
        self._stories = RoundRobin(
            self._lock,
            lambda: self._closed,
            service.run_in_pool,
            self._serve,
            idle=lambda story_id: self._previous.pop(story_id, None),
            what="story",
        )
        """Stories with a task in the pool: at most one each, so a story's frames are drawn in order."""
        self._running: dict[str, threading.Event] = {}
        self._closed = False
        self._previous: dict[str, tuple[int, list[bytes]]] = {}
        """Story id → (round, its frames' PNG bytes): the global references the next round reads."""

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Take up the unfinished stories whose lease is free or expired (a previous process's included)."""
        for story_id in self.store.claimable():
            self._schedule(story_id)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for cancel in self._running.values():
                cancel.set()

    # --- requests -------------------------------------------------------------------------------------

    def submit(self, tenant: str, request: StoryCreate) -> Story:
        """Store and queue a story; RequestRejected for a canvas or preset the service cannot draw."""
        self.service.check_canvas(request.height, request.width, request.preset)
        if request.fast and self.service.settings.preset(request.preset).fast is None:
            raise RequestRejected(f"fast: preset {request.preset!r} names no few-step weights (preset field `fast`)")
        for layout in request.layouts or []:
            if len(layout) > self.service.settings.max_subjects:
                raise RequestRejected(f"a frame may place at most {self.service.settings.max_subjects} subjects")
        seed = request.seed if request.seed is not None else random.randrange(2**31)
        story = self.store.create(tenant, request, seed)
        self._schedule(story.id)
        return story

    def cancel(self, story: Story) -> bool:
        """Ask an unfinished story to stop (it ends `failed`, reason "cancelled"); False when it had finished."""
        if story.status.finished or not self.store.request_cancel(story.id):
            return False
        self._stop(story.id)
        return True

    def delete(self, story: Story) -> None:
        """Delete the story, its frames and the image files nothing else references; a running frame stops."""
        orphans = self.store.delete(story.id)
        self._stop(story.id)
        for image_id in orphans:
            self.images.delete(image_id)
        self.service.bus.wake(story.id)

    def _stop(self, story_id: str) -> None:
        with self._lock:
            cancel = self._running.get(story_id)
        if cancel is not None:
            cancel.set()

    # --- scheduling -----------------------------------------------------------------------------------

    def _schedule(self, story_id: str) -> None:
        self._stories.schedule(story_id)

    def _serve(self, story_id: str) -> bool:
        """One frame of the story (studio/round_robin.py queues it again at the back while it has more)."""
        try:
            return self._step(story_id)
        except Exception:
            log.exception("story %s: its frame could not be finished", story_id)
            return False

    # --- one frame ------------------------------------------------------------------------------------

    def _step(self, story_id: str) -> bool:
        """Draw the story's next missing frame (or close its round); True while the story has more to draw."""
        owner, lease = self.service.owner, self.service.settings.scaleout.lease_seconds
        story = self.store.claim(story_id, owner, lease)
        if story is None:
            return False
        cancel = StoredCancel(lambda: self.store.cancel_requested(story_id), self.service.cancel_poll_seconds)
        with self._lock:
            if self._closed:
                cancel.set()
            self._running[story_id] = cancel
        try:
            if cancel.is_set():
                raise DrawCancelled
            return self._draw_next(story, cancel, lambda: self.store.renew(story_id, owner, lease))
        except TurnFailure as exc:
            log.info("story %s failed: %s", story_id, exc.reason)
            self._finish(story, StoryStatus.FAILED, exc.reason)
        except DrawCancelled:
            if self._closed:
                self.store.release(story_id, owner)  # the next process continues the story
            else:
                self._finish(story, StoryStatus.FAILED, "cancelled")
        except Exception as exc:
            log.exception("story %s failed", story_id)
            self._finish(story, StoryStatus.FAILED, clip_reason(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self._running.pop(story_id, None)
        return False

    def _draw_next(self, story: Story, cancel: threading.Event, renew: Callable[[], bool]) -> bool:
        round_index = story.current_round
        drawn = {frame.index for frame in self.store.frames(story.id, round_index)}
        missing = [index for index in range(story.frame_count) if index not in drawn]
        if missing:
            frame_index = missing[0]
            references = self._previous_round(story, round_index)
            job = frame_job(story, round_index, frame_index, references)
            started = time.perf_counter()

            renewed = [time.monotonic()]

            def on_step(step: int, total: int) -> None:
                if time.monotonic() - renewed[0] > self.service.settings.scaleout.lease_seconds / 3:
                    renewed[0] = time.monotonic()
                    if not renew():
                        cancel.set()  # another process took the story over

            result = self.drawer.draw(job, on_step=on_step, cancel=cancel)
            image_id = self.images.put(result.image)
            seconds = round(time.perf_counter() - started, 4)
            if not self.store.add_frame(story.id, self.service.owner, round_index, frame_index, image_id, seconds):
                self._drop_unreferenced(image_id)
                return False
            self.service.bus.wake(story.id)
            if len(missing) > 1:
                return True
        # every frame of the round is drawn: the next round, or the end
        if round_index >= story.request.rounds:
            self._finish(story, StoryStatus.DONE)
            return False
        self.store.advance_round(story.id, self.service.owner, round_index + 1)
        self.service.bus.wake(story.id)
        return True

    def _previous_round(self, story: Story, round_index: int) -> list[bytes]:
        """Every frame of round `round_index` − 1 in frame order (none for round 0), read once per round."""
        if round_index == 0:
            return []
        cached = self._previous.get(story.id)
        if cached is not None and cached[0] == round_index - 1:
            return cached[1]
        frames = self.store.frames(story.id, round_index - 1)
        references = [self.images.get(frame.image_id) for frame in frames]
        self._previous[story.id] = (round_index - 1, references)
        return references

    def _drop_unreferenced(self, image_id: str) -> None:
        for orphan in self.service.db.unreferenced_images({image_id}):
            self.images.delete(orphan)

    def _finish(self, story: Story, status: StoryStatus, reason: str | None = None) -> None:
        if self.store.finish(story.id, self.service.owner, status, reason):
            self.service.bus.wake(story.id)
