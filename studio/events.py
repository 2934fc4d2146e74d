"""In-process fan-out of stored turn events to live listeners (the SSE streams). A session listener gets the
events stored by this process, and None when another process stored events of the session (see
studio/notify.py): it then reads them from the database."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import ClassVar

from pydantic import BaseModel

from studio.turns import TurnEvent


class EventNotice(BaseModel):
    """The payload of one NOTIFY: which session has a new event, its number and type, and the process that
    stored it (a process ignores its own notices: its streams already got the event in-process)."""

    channel: ClassVar[str] = "studio_events"

    session_id: str
    seq: int
    type: str
    origin: str


Listener = Callable[[TurnEvent], None]
SessionListener = Callable[[TurnEvent | None], None]


class EventBus:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: dict[str, list[SessionListener]] = defaultdict(list)
        self._global: list[Listener] = []

    def subscribe_all(self, listener: Listener) -> None:
        """Listen to every session's events for the bus's lifetime (metrics)."""
        with self._lock:
            self._global.append(listener)

    def subscribe(self, session_id: str, listener: SessionListener) -> Callable[[], None]:
        with self._lock:
            self._listeners[session_id].append(listener)

        def unsubscribe() -> None:
            with self._lock:
                listeners = self._listeners.get(session_id, [])
                if listener in listeners:
                    listeners.remove(listener)
                if not listeners:
                    self._listeners.pop(session_id, None)

        return unsubscribe

    def publish(self, event: TurnEvent) -> None:
        with self._lock:
            listeners = [*self._global, *self._listeners.get(event.session_id, [])]
        for listener in listeners:
            listener(event)

    def wake(self, session_id: str | None = None) -> None:
        """Tell the listeners of a session (of every session when None) that it has events they were not
        given: stored by another process, or possibly missed while the notice connection was down."""
        with self._lock:
            if session_id is None:
                listeners = [listener for group in self._listeners.values() for listener in group]
            else:
                listeners = list(self._listeners.get(session_id, []))
        for listener in listeners:
            listener(None)
