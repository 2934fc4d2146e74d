"""Round-robin service of keyed work on the turn service's shared worker pool (a session's turns, a story's
frames): each key has at most one task in the pool, waiting or running, so its units run in order and never two
at once; after each unit the key queues again at the back, so with more keys than workers every key with work
gets one unit per round."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class RoundRobin:
    """`serve(key)` runs one unit of the key's work and says whether it did (None: it failed and logged why;
    the key stops until it is scheduled again). Under `lock` (the owner's, which also guards `closed`),
    `again(key, served)` decides whether the key queues again; a key that stops is handed to `idle`."""

    def __init__(
        self,
        lock: threading.Lock,
        closed: Callable[[], bool],
        run_in_pool: Callable[[Callable[[], None]], bool],
        serve: Callable[[str], bool | None],
        again: Callable[[str, bool], bool] = lambda _key, served: served,
        idle: Callable[[str], None] | None = None,
        what: str = "key",
    ) -> None:
        self._lock = lock
        self._closed = closed
        self._run_in_pool = run_in_pool
        self._serve_one = serve
        self._again = again
        self._idle = idle
        self._what = what
        self.active: set[str] = set()
        """Keys with a task in the pool (waiting or running)."""

    def schedule(self, key: str) -> None:
        """Queue the key unless it is queued or running already (or the owner is closed)."""
        with self._lock:
            if self._closed() or key in self.active:
                return
            self.active.add(key)
            self._submit(key)

    def _submit(self, key: str) -> None:
        """Queue one unit of the key behind every task already waiting (call under the lock)."""
        if not self._run_in_pool(lambda: self._serve(key)):  # the pool is shut down: the next process resumes it
            self._stop(key)

    def _serve(self, key: str) -> None:
        try:
            served = None if self._closed() else self._serve_one(key)
        except Exception:  # `serve` logs its own failures; this keeps the key from being stuck as active
            log.exception("%s %s: its work could not be finished", self._what, key)
            served = None
        with self._lock:
            # re-checked under the lock: work that arrived since the unit ran must not wait forever
            if served is not None and not self._closed() and self._again(key, served):
                self._submit(key)
            else:
                self._stop(key)

    def _stop(self, key: str) -> None:
        self.active.discard(key)
        if self._idle is not None:
            self._idle(key)
