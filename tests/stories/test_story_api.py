"""/v1/stories and the SDK's story methods, on a service whose drawer is the recording fake."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.client import AsyncStudioClient, InvalidRequestError, NotFoundError, StudioClient
from entrypoints.server import BackgroundServer, free_port
from studio.service import TurnService
from studio.stories import Story
from tests.stories.conftest import RecordingDrawer, story_service, wait_story

SMALL = {"prompts": ["a fox", "a fox swims"], "rounds": 1, "height": 64, "width": 64}


@pytest.fixture
def stories(tmp_path: Path, recorder: RecordingDrawer) -> TurnService:
    """Not started: the app's lifespan starts it."""
    return story_service(tmp_path, recorder)


@pytest.fixture
def app_client(stories: TurnService) -> Iterator[tuple[TestClient, dict[str, str], dict[str, str]]]:
    a = {"Authorization": f"Bearer {stories.db.create_key('tenant-a')}"}
    b = {"Authorization": f"Bearer {stories.db.create_key('tenant-b')}"}
    with TestClient(create_app(stories)) as client:
        yield client, a, b


def test_post_get_frames_images_events_and_delete(stories: TurnService, app_client: tuple) -> None:
    client, a, _ = app_client
    posted = client.post("/v1/stories", json=SMALL, headers=a)
    assert posted.status_code == 202, posted.text
    story_id = posted.json()["id"]
    wait_story(stories, story_id)
    story = Story.model_validate(client.get(f"/v1/stories/{story_id}", headers=a).json())
    assert story.status == "done" and story.frames_done == story.frames_total == 4
    assert story.created_at.tzinfo is not None and story.finished_at is not None and story.finished_at.tzinfo
    assert [[frame.index for frame in frames] for frames in story.rounds] == [[0, 1], [0, 1]]
    image = client.get(story.rounds[1][0].image_url or "", headers=a)
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")

    stream = client.get(f"/v1/stories/{story_id}/events", headers=a)
    ids = [int(line[3:]) for line in stream.text.splitlines() if line.startswith("id:")]
    kinds = [line[6:].strip() for line in stream.text.splitlines() if line.startswith("event:")]
    assert kinds == ["frame", "frame", "round", "frame", "frame", "round", "done"]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    resumed = client.get(f"/v1/stories/{story_id}/events", headers={**a, "Last-Event-ID": str(ids[3])})
    assert [line[6:].strip() for line in resumed.text.splitlines() if line.startswith("event:")] == kinds[4:]

    assert [s["id"] for s in client.get("/v1/stories", headers=a).json()] == [story_id]
    assert client.post(f"/v1/stories/{story_id}/cancel", headers=a).status_code == 409
    assert client.delete(f"/v1/stories/{story_id}", headers=a).status_code == 204
    assert client.get(f"/v1/stories/{story_id}", headers=a).status_code == 404
    assert client.get(story.rounds[1][0].image_url or "", headers=a).status_code == 404


def test_another_tenant_gets_404_everywhere(stories: TurnService, app_client: tuple) -> None:
    client, a, b = app_client
    story_id = client.post("/v1/stories", json=SMALL, headers=a).json()["id"]
    wait_story(stories, story_id)
    image_url = client.get(f"/v1/stories/{story_id}", headers=a).json()["rounds"][0][0]["image_url"]
    assert client.get(f"/v1/stories/{story_id}", headers=b).status_code == 404
    assert client.get(f"/v1/stories/{story_id}/events", headers=b).status_code == 404
    assert client.post(f"/v1/stories/{story_id}/cancel", headers=b).status_code == 404
    assert client.delete(f"/v1/stories/{story_id}", headers=b).status_code == 404
    assert client.get(image_url, headers=b).status_code == 404
    assert client.get("/v1/stories", headers=b).json() == []


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"rounds": 31}, ["body", "rounds"]),
        ({"rounds": -1}, ["body", "rounds"]),
        ({"prompts": []}, ["body", "prompts"]),
        ({"prompts": ["x"] * 201}, ["body", "prompts"]),
        ({"prompts": ["a\x00b"]}, ["body", "prompts", 0]),
        ({"scale_end": 3.0}, ["body", "scale_end"]),
        ({"style": "oil"}, ["body", "style"]),
        ({"seed": -1}, ["body", "seed"]),
        ({"layouts": [[]]}, ["body"]),
        ({"height": 4096}, ["body"]),
        ({"preset": "nope"}, ["body"]),
    ],
)
def test_invalid_stories_are_refused_with_422_naming_the_field(app_client: tuple, change: dict, loc: list) -> None:
    client, a, _ = app_client
    answer = client.post("/v1/stories", json={**SMALL, **change}, headers=a)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail[0]["loc"][: len(loc)] == loc


def test_non_finite_scale_is_refused(app_client: tuple) -> None:
    client, a, _ = app_client
    body = '{"prompts": ["a"], "scale_start": NaN}'
    answer = client.post("/v1/stories", content=body, headers={**a, "Content-Type": "application/json"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "scale_start"]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, TurnService, RecordingDrawer]]:
    drawer = RecordingDrawer()
    service = story_service(tmp_path, drawer, port=free_port())
    key = service.db.create_key("sdk")
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        yield server.url, key, service, drawer


def test_sdk_creates_waits_with_progress_and_streams(served: tuple) -> None:
    url, key, _, drawer = served
    with StudioClient(url, api_key=key) as client:
        story = client.create_story(["a", "b", "c"], rounds=2, height=64, width=64, seed=7)
        seen: list[int] = []
        done = client.wait_story(story, on_progress=lambda s: seen.append(s.frames_done), poll_seconds=0.01)
        assert done.status == "done" and done.frames_done == 9 and seen[-1] == 9 and seen == sorted(seen)
        assert client.get_image(done.rounds[2][2].image_url or "").startswith(b"\x89PNG")
        events = list(client.story_events(story.id))
        assert [e.type for e in events].count("frame") == 9 and events[-1].type == "done"
        assert [e.data["round"] for e in events if e.type == "round"] == [0, 1, 2]
        with pytest.raises(NotFoundError):
            client.get_story("0" * 32)
        with pytest.raises(InvalidRequestError):
            client.create_story(["a"], height=64, width=64, preset="nope")
        client.delete_story(story.id)
        assert client.list_stories() == []
    assert len(drawer.calls) == 9


def test_async_sdk_waits_for_a_story(served: tuple) -> None:
    url, key, _, _ = served

    async def run() -> Story:
        async with AsyncStudioClient(url, api_key=key) as client:
            story = await client.create_story(["a", "b"], rounds=1, height=64, width=64)
            done = await client.wait_story(story.id, poll_seconds=0.01)
            kinds = [event.type async for event in client.story_events(story.id)]
            assert kinds[-1] == "done" and kinds.count("round") == 2
            return done

    assert asyncio.run(run()).frames_done == 4
