"""Waking the other API processes on one PostgreSQL database: every stored event is announced with
PostgreSQL's NOTIFY (sent by `Database.append_event` in the transaction that stores it, so it is delivered on
commit, after the row is readable), and each process holds one LISTEN connection that hands the notices of the
other processes to the service. A notice only says "the session has new events": a woken stream reads them
from the events table, so a notice that is lost (a dropped connection) costs latency, not events.
Why not Redis pub/sub: see docs/operations.md."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pydantic import ValidationError

from studio.events import EventNotice
from studio.storage.database import libpq_url

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0


class PostgresListener:
    """A daemon thread holding a LISTEN connection. `on_notice` gets every notice another origin sent;
    `on_connect` runs after each (re)connection, when notices may have been missed meanwhile."""

    def __init__(
        self,
        url: str,
        origin: str,
        on_notice: Callable[[EventNotice], None],
        on_connect: Callable[[], None],
    ) -> None:
        self.url = libpq_url(url)
        self.origin = origin
        self.on_notice = on_notice
        self.on_connect = on_connect
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {EventNotice.channel}")
                    self.listening.set()
                    self.on_connect()
                    while not self._stop.is_set():
                        for notify in conn.notifies(timeout=0.5):
                            self._deliver(notify.payload)
            except Exception:
                log.exception("event listener lost its PostgreSQL connection; reconnecting")
            finally:
                self.listening.clear()
            self._stop.wait(RECONNECT_SECONDS)

    def _deliver(self, payload: str) -> None:
        try:
            notice = EventNotice.model_validate_json(payload)
        except ValidationError:
            log.warning("ignoring a malformed event notice: %.200s", payload)
            return
        if notice.origin != self.origin:
            self.on_notice(notice)
