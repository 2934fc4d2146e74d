"""A scripted event-stream service behind httpx.MockTransport: each connection to /events serves a chosen
number of events and then ends cleanly or breaks, so the SDK's resume logic is tested without timing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from studio.turns import Turn, TurnEvent, TurnRequest

SESSION, TURN_ID = "s" * 32, "t" * 32


@dataclass
class Connection:
    """What one GET /events does: serve `count` events (after a `retry:` hint if given), replaying `overlap`
    already-seen ones first, then `pings` keep-alive comments, then end cleanly or `broken` (a transport
    error mid-stream)."""

    count: int
    broken: bool = False
    overlap: int = 0
    retry_ms: int | None = None
    pings: int = 0


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], broken: bool) -> None:
        self.chunks, self.broken = chunks, broken
        self.pulled = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.broken:
            raise httpx.ReadError("connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.pulled += 1
            yield chunk
        if self.broken:
            raise httpx.ReadError("connection reset by peer")


@dataclass
class ScriptedStream:
    """One session with one turn (index 1) whose events end with `final`. The turn reads as running until
    its final event has been served, or until `finish_after_polls` GETs of the turn when that is set;
    the GETs after the first `refused_polls` are refused (the server restarting)."""

    connections: list[Connection]
    final: str = "done"
    finish_after_polls: int | None = None
    refused_polls: int = 0
    stream_requests: list[httpx.Request] = field(default_factory=list)
    bodies: list[_Body] = field(default_factory=list)
    turn_polls: int = 0
    served: int = 0

    @property
    def events(self) -> list[TurnEvent]:
        types = ["queued", "planning", "planned", "drawing", "step", self.final]
        return [
            TurnEvent(seq=seq, type=kind, session_id=SESSION, turn_id=TURN_ID, turn_index=1)  # type: ignore[arg-type]
            for seq, kind in enumerate(types, start=1)
        ]

    def turn(self, status: str = "queued") -> Turn:
        return Turn(
            id=TURN_ID,
            session_id=SESSION,
            index=1,
            status=status,  # type: ignore[arg-type]
            request=TurnRequest(message="a dog"),
            error="scripted failure" if status == "failed" else None,
            created_at=datetime.now(UTC),
        )

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/v1/sessions/{SESSION}/events":
            return self._stream(request)
        if request.url.path == f"/v1/sessions/{SESSION}/turns/1":
            self.turn_polls += 1
            if 1 < self.turn_polls <= 1 + self.refused_polls:
                raise httpx.ConnectError("connection refused")
            finished = (
                self.served >= len(self.events)
                if self.finish_after_polls is None
                else self.turn_polls > self.finish_after_polls
            )
            return httpx.Response(200, json=self.turn(self.final if finished else "drawing").model_dump(mode="json"))
        return httpx.Response(404, json={"detail": "not found"})

    def _stream(self, request: httpx.Request) -> httpx.Response:
        self.stream_requests.append(request)
        start = max(int(request.url.params.get("after", 0)), int(request.headers.get("last-event-id", 0)))
        plan = self.connections.pop(0) if self.connections else Connection(count=len(self.events))
        first = max(0, start - plan.overlap)
        chunks = [] if plan.retry_ms is None else [f"retry: {plan.retry_ms}\n\n".encode()]
        for event in self.events[first : start + plan.count]:
            chunks.append(f"id: {event.seq}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode())
            chunks.append(b": ping\n\n")
            self.served = max(self.served, event.seq)
        chunks += [b": ping\n\n"] * plan.pings
        self.bodies.append(_Body(chunks, plan.broken))
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=self.bodies[-1])
