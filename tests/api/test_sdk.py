"""The client SDK against the app served by uvicorn on loopback (sync and async)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import api.client as client_module
from api.app import create_app
from api.client import (
    AsyncStudioClient,
    AuthenticationError,
    EventStreamError,
    InvalidRequestError,
    NotFoundError,
    StudioClient,
    TurnFailedError,
    TurnTimeoutError,
)
from entrypoints.server import BackgroundServer, free_port
from studio.service import TurnService
from studio.turns import Turn, TurnEvent
from tests.api.conftest import ScriptedEngine, make_service, png
from tests.api.sdk_fakes import SESSION, Connection, ScriptedStream

PLAN = {
    "height": 64,
    "width": 64,
    "background": "a park",
    "items": [{"subject_id": "1", "phrase": "a dog", "box": {"x": 0, "y": 0, "w": 32, "h": 32}}],
}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, TurnService, ScriptedEngine]]:
    service, engine = make_service(tmp_path, port=free_port(), max_queued_turns=1)
    key = service.db.create_key("sdk")
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        yield server.url, key, service, engine
    engine.hold.set()


def test_sync_client_chat_events_images_and_errors(served: tuple) -> None:
    url, key, _, _ = served
    with StudioClient(url, api_key=key) as client:
        assert client.health()["status"] == "ok"
        session = client.create_session(title="sdk", height=64, width=64)
        turn = client.chat(session.id, "a girl in the park")
        assert turn.status == "done" and turn.plan is not None
        assert client.get_image(turn.image_url).startswith(b"\x89PNG")
        events = []
        for event in client.events(session.id):
            events.append(event)
            if event.type == "done":
                break
        types = [e.type for e in events]
        assert types == ["queued", "planning", "planned", "drawing", "step", "step", "step", "done"]
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.data["step"] for e in events if e.type == "step"] == [1, 2, 3]
        drawn = client.draw_plan(session.id, PLAN)
        assert drawn.index == 2 and [i.subject_id for i in drawn.plan.items] == ["1"]
        subject = client.upload_reference(session.id, "cat", png(16, 16))
        assert subject.id == "2" and subject.reference_source == "upload"
        assert {s.id for s in client.list_subjects(session.id)} == {"1", "2"}
        assert [t.index for t in client.list_turns(session.id)] == [1, 2]
        with pytest.raises(TurnFailedError, match="scripted planner failure"):
            client.chat(session.id, "fail now")
        with pytest.raises(NotFoundError):
            client.get_session("0" * 32)
        with pytest.raises(InvalidRequestError):
            client.post_turn(session.id, plan={**PLAN, "height": 4096})
        client.delete_session(session.id)
        assert client.list_sessions() == []
    with StudioClient(url, api_key="sk-studio-wrong") as client, pytest.raises(AuthenticationError):
        client.list_sessions()


def test_sync_client_retries_429_until_the_queue_drains(served: tuple) -> None:
    url, key, _, engine = served
    engine.hold.clear()
    with StudioClient(url, api_key=key, max_retries=8) as client:
        session = client.create_session(height=64, width=64)
        first = client.post_turn(session.id, message="first")
        threading.Timer(0.5, engine.hold.set).start()  # the queue (limit 1) drains after a while
        second = client.post_turn(session.id, message="second")  # 429 first, then accepted
        assert (first.index, second.index) == (1, 2)
        assert client.wait(second).status == "done"


def test_async_client(served: tuple) -> None:
    url, key, _, _ = served

    async def scenario() -> None:
        async with AsyncStudioClient(url, api_key=key) as client:
            session = await client.create_session(height=64, width=64)
            turn = await client.chat(session.id, "a boy")
            assert turn.status == "done"
            assert (await client.get_image(turn.image_id)).startswith(b"\x89PNG")
            assert [s.id for s in await client.list_subjects(session.id)] == ["1"]
            drawn = await client.draw_plan(session.id, PLAN)
            assert drawn.status == "done"
            with pytest.raises(NotFoundError):
                await client.get_turn(session.id, 99)

    asyncio.run(scenario())


# The event stream's resume logic, against a scripted stream (tests/api/sdk_fakes.py): both clients.


def _wait(kind: str, stream: ScriptedStream, timeout: float | None = 60.0) -> tuple[Turn, list[TurnEvent]]:
    """Run `wait` for the scripted turn with the sync or async client; the turn and the events seen."""
    seen: list[TurnEvent] = []
    turn = stream.turn()
    if kind == "sync":
        with StudioClient("http://studio.test", transport=stream.transport()) as client:
            return client.wait(turn, timeout=timeout, on_event=seen.append), seen

    async def scenario() -> Turn:
        async with AsyncStudioClient("http://studio.test", transport=stream.transport()) as client:
            return await client.wait(turn, timeout=timeout, on_event=seen.append)

    return asyncio.run(scenario()), seen


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the client's reconnect and poll delays instead of sleeping them."""
    delays: list[float] = []

    async def async_sleep(seconds: float) -> None:
        delays.append(seconds)

    monkeypatch.setattr(client_module.time, "sleep", delays.append)
    monkeypatch.setattr(client_module.asyncio, "sleep", async_sleep)
    return delays


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_resumes_a_stream_that_ends_before_the_turn_finishes(kind: str, no_sleep: list[float]) -> None:
    stream = ScriptedStream([Connection(count=2), Connection(count=2, overlap=1), Connection(count=9, overlap=2)])
    turn, seen = _wait(kind, stream)
    assert turn.status == "done"
    assert [e.seq for e in seen] == [1, 2, 3, 4, 5, 6]  # contiguous: replayed overlaps dropped
    assert [r.headers.get("last-event-id") for r in stream.stream_requests] == [None, "2", "4"]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_resumes_a_broken_stream_after_the_servers_retry_hint(kind: str, no_sleep: list[float]) -> None:
    stream = ScriptedStream([Connection(count=3, broken=True, retry_ms=1500), Connection(count=9)])
    turn, seen = _wait(kind, stream)
    assert turn.status == "done" and [e.seq for e in seen] == [1, 2, 3, 4, 5, 6]
    assert stream.stream_requests[1].headers["last-event-id"] == "3"
    assert no_sleep == [1.5]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_raises_for_a_turn_that_fails_after_the_stream_dropped(kind: str, no_sleep: list[float]) -> None:
    stream = ScriptedStream([Connection(count=1, broken=True), Connection(count=9)], final="failed")
    with pytest.raises(TurnFailedError, match="scripted failure"):
        _wait(kind, stream)
    assert stream.stream_requests[1].headers["last-event-id"] == "1"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_polls_the_turn_when_streaming_keeps_failing(kind: str, no_sleep: list[float]) -> None:
    dead = [Connection(count=0, broken=True) for _ in range(20)]
    stream = ScriptedStream(dead, finish_after_polls=3)
    turn, seen = _wait(kind, stream)
    assert turn.status == "done" and seen == []
    assert len(stream.stream_requests) == 6  # the first try and stream_retries=5 reconnects, then polling
    assert stream.turn_polls == 4 and no_sleep[-2:] == [client_module.POLL_INTERVAL] * 2


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_rides_out_a_server_that_is_unreachable_for_a_while(kind: str, no_sleep: list[float]) -> None:
    refused = [Connection(count=0, broken=True) for _ in range(20)]  # the stream's GETs fail too
    stream = ScriptedStream(refused, finish_after_polls=5, refused_polls=3)
    turn, _ = _wait(kind, stream)
    assert turn.status == "done" and stream.turn_polls == 6


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_times_out_with_an_sdk_timeout_error(kind: str, no_sleep: list[float]) -> None:
    stream = ScriptedStream([], finish_after_polls=1_000)
    with pytest.raises(TurnTimeoutError) as raised:
        _wait(kind, stream, timeout=0)
    assert isinstance(raised.value, TimeoutError) and raised.value.turn.status == "drawing"
    assert stream.stream_requests == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_wait_times_out_on_a_connection_that_only_pings(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx-sse surfaces no keep-alive before a connection's first event: the deadline is still checked
    at each chunk read, so a silent turn on a live connection cannot hold `wait` past its timeout."""
    clock = iter(range(1_000_000))
    monkeypatch.setattr(client_module, "_now", lambda: float(next(clock)))  # one second per look at the clock
    stream = ScriptedStream([Connection(count=0, pings=10_000)], finish_after_polls=1_000)
    with pytest.raises(TurnTimeoutError):
        _wait(kind, stream, timeout=20)
    assert len(stream.bodies) == 1 and stream.bodies[0].pulled < 20


def test_events_resume_with_last_event_id_and_give_up_after_the_retry_budget(no_sleep: list[float]) -> None:
    stream = ScriptedStream([Connection(count=2, broken=True), Connection(count=1, overlap=2)])
    stream.connections += [Connection(count=0, broken=True) for _ in range(3)]
    with StudioClient("http://studio.test", transport=stream.transport(), stream_retries=2) as client:
        seen = []
        with pytest.raises(EventStreamError) as raised:
            for event in client.events(SESSION, after=0):
                seen.append(event.seq)
    assert seen == [1, 2, 3] and raised.value.last_event_id == 3
    assert [r.headers.get("last-event-id") for r in stream.stream_requests] == [None, "2", "3", "3", "3"]
