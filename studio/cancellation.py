"""A turn's cancel signal: an in-process event that also reads the cancel stored on the turn's row.

Drawers and engines only call `is_set()` between two steps; this one answers True once `set()` was called
in this process (shutdown, a cancel or delete handled here) or once a read of the stored flag says so (a
cancel or delete handled by any process, before or after a restart). The stored flag is read at most once
per `interval` seconds, so checking it every denoising step costs at most one small query per interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class StoredCancel(threading.Event):
    """`is_set()` polls `stored()` (True when a cancel is stored) at most every `interval` seconds; the first
    call always polls. Only `is_set()` polls: `wait()` sees `set()` calls of this process alone."""

    def __init__(self, stored: Callable[[], bool], interval: float) -> None:
        super().__init__()
        self._stored = stored
        self._interval = interval
        self._next_poll = float("-inf")

    def is_set(self) -> bool:
        if super().is_set():
            return True
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + self._interval
        if self._stored():
            self.set()
            return True
        return False
