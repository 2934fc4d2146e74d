"""Who drives a turn: each service instance has a lease owner id, and a ticker thread that renews the leases
of the turns it runs and looks for claimable turns (new ones, or those of a process that died)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

log = logging.getLogger(__name__)


def lease_owner_id() -> str:
    """A name for this service instance, unique across machines and restarts: host, pid and a random part."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Ticker:
    """Calls `tick` every `interval` seconds on a daemon thread until stopped; a failing tick is logged and
    the next one runs as planned (e.g. the database was briefly unreachable)."""

    def __init__(self, interval: float, tick: Callable[[], None], name: str) -> None:
        self.interval = interval
        self.tick = tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                log.exception("%s: tick failed", self._thread.name)
