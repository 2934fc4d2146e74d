"""The client SDK against the app served by uvicorn on loopback (sync and async)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from api.client import (
    AsyncStudioClient,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    StudioClient,
    TurnFailedError,
)
from entrypoints.server import BackgroundServer, free_port
from studio.service import TurnService
from tests.api.conftest import ScriptedEngine, make_service, png

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
