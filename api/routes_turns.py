"""Turns: post (202), list, get; and the session's event stream (SSE)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, status
from sse_starlette.sse import EventSourceResponse

from api.auth import get_service
from api.errors import error_responses
from api.routes_sessions import owned_session
from api.urls import event_with_urls, turn_with_urls
from studio.service import QueueFull, RequestRejected, SessionGone, TurnService
from studio.turns import Session, Turn, TurnEvent, TurnRequest

router = APIRouter(
    prefix="/v1/sessions/{session_id}",
    tags=["turns"],
    responses=error_responses(401, 404, 422),
)
MAX_INT = 2**31 - 1
TurnIndex = Annotated[int, Path(ge=1, le=MAX_INT, description="the turn's number in its session, from 1")]


@router.post(
    "/turns", status_code=status.HTTP_202_ACCEPTED, response_model=Turn, responses=error_responses(400, 409, 413, 429)
)
def post_turn(
    body: TurnRequest,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
    idempotency_key: str | None = Header(default=None, max_length=200),
) -> Turn:
    """Queue a turn: `{"message": …}` is planned by the agents, `{"plan": …}` is drawn as given.

    A retry with the same `Idempotency-Key` and the same body returns the same turn (202) instead of drawing
    twice; the same key with a different body is refused with 422 (use a new key for a new request). 429 with
    `Retry-After` when the session already has its maximum of unfinished turns."""
    try:
        return turn_with_urls(service.submit_turn(session, body, idempotency_key))
    except QueueFull as exc:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, str(exc), headers={"Retry-After": str(exc.retry_after)}
        ) from exc
    except RequestRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except SessionGone as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get("/turns", response_model=list[Turn])
def list_turns(session: Session = Depends(owned_session), service: TurnService = Depends(get_service)) -> list[Turn]:
    return [turn_with_urls(turn) for turn in service.db.list_turns(session.id)]


@router.get("/turns/{index}", response_model=Turn)
def get_turn(
    index: TurnIndex, session: Session = Depends(owned_session), service: TurnService = Depends(get_service)
) -> Turn:
    turn = service.db.get_turn(session.id, index)
    if turn is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"turn {index} not found in session {session.id}")
    return turn_with_urls(turn)


@router.post(
    "/turns/{index}/cancel", response_model=Turn, status_code=status.HTTP_202_ACCEPTED, responses=error_responses(409)
)
def cancel_turn(
    index: TurnIndex, session: Session = Depends(owned_session), service: TurnService = Depends(get_service)
) -> Turn:
    """Cancel a queued or running turn (a drawing turn stops between two denoising steps). 409 when the
    turn has already finished."""
    turn = service.db.get_turn(session.id, index)
    if turn is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"turn {index} not found in session {session.id}")
    if not service.cancel_turn(turn):
        raise HTTPException(status.HTTP_409_CONFLICT, f"turn {index} has already finished ({turn.status})")
    return turn_with_urls(turn)


@router.get("/events")
async def events(
    request: Request,
    session: Session = Depends(owned_session),
    service: TurnService = Depends(get_service),
    after: int = Query(0, ge=0, le=MAX_INT, description="replay events with a sequence number above this"),
    last_event_id: int | None = Header(default=None, ge=0, le=MAX_INT),
) -> EventSourceResponse:
    """Server-Sent Events of the session: queued, planning, planned, revised, drawing, step, done, failed.
    Stored events after `after` (or `Last-Event-ID`) are replayed first, then live ones follow, whichever API
    process drives the turn: this process's events arrive in-process, another process's wake the stream
    (PostgreSQL NOTIFY), which then reads them from the database; it also re-reads every
    `scaleout.event_poll_seconds`, so a lost wake-up delays an event but never drops it."""
    start = max(after, last_event_id or 0)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[TurnEvent | None] = asyncio.Queue()
    unsubscribe = service.bus.subscribe(session.id, lambda event: loop.call_soon_threadsafe(queue.put_nowait, event))
    poll_seconds = service.settings.scaleout.event_poll_seconds

    async def read_after(seq: int) -> list[TurnEvent]:
        return await asyncio.to_thread(service.db.events_after, session.id, seq)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            sent = start
            pending = await read_after(sent)
            last_read = time.monotonic()
            while True:
                for event in pending:
                    if event.seq > sent:
                        sent = event.seq
                        yield _sse(event)
                if await request.is_disconnected():
                    return
                try:
                    signal = await asyncio.wait_for(queue.get(), timeout=min(poll_seconds, 1.0))
                except TimeoutError:
                    if time.monotonic() - last_read < poll_seconds:
                        pending = []
                        continue
                    signal = None
                if signal is not None and signal.seq <= sent + 1:
                    pending = [signal]  # the next event, handed over in-process: no read needed
                else:  # woken by another process, a gap, or the periodic re-read
                    pending = await read_after(sent)
                    last_read = time.monotonic()
        finally:
            unsubscribe()

    return EventSourceResponse(stream(), ping=15)


def _sse(event: TurnEvent) -> dict[str, str]:
    return {"id": str(event.seq), "event": event.type, "data": event_with_urls(event).model_dump_json()}
