"""Fast mode through the service (docs/fast_mode.md): a fast turn on the tiny drawer streams one `preview`
event per step on the session's SSE stream, which the SDK decodes and saves; a preset without few-step weights
refuses fast mode with 422 naming the field; stories' fast variant uses the preset's weights."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from api.app import create_app
from api.client import InvalidRequestError, StudioClient, preview_of
from drawer import load_drawer
from entrypoints.server import BackgroundServer, free_port
from studio.draw import DrawSettings
from studio.fast_mode import PREVIEW_MAX_BYTES
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.service import TurnService
from studio.settings import ModelPreset, default_presets
from studio.turns import TurnEvent
from tests.api.conftest import ScriptedEngine, make_service
from tests.stories.conftest import RecordingDrawer, wait_story

PLAN = TurnPlan(
    height=64,
    width=64,
    background="a park",
    items=[PlanItem(subject_id="1", phrase="a cat", box=Box(x=8, y=8, w=32, h=32))],
)


def _presets() -> dict[str, ModelPreset]:
    return {**default_presets(), "plain": ModelPreset(kind="tiny", dtype="float32", device="cpu")}


@pytest.fixture(scope="module")
def tiny() -> object:
    return load_drawer(default_presets()["tiny"])


@pytest.fixture
def served(tmp_path: Path, tiny: object) -> Iterator[tuple[str, str, TurnService, ScriptedEngine]]:
    service, engine = make_service(tmp_path, presets=_presets(), port=free_port())
    engine.drawer = tiny  # the real tiny drawer behind the scripted planner
    key = service.db.create_key("sdk")
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        yield server.url, key, service, engine
    engine.hold.set()


def test_fast_turn_streams_previews_the_sdk_saves(served: tuple, tmp_path: Path) -> None:
    url, key, service, _ = served
    settings = DrawSettings(mode="fast", seed=1, mechanisms=["regional"])
    with StudioClient(url, api_key=key) as client:
        session = client.create_session(height=64, width=64, settings=settings)
        events: list[TurnEvent] = []
        turn = client.wait(client.post_turn(session.id, plan=PLAN), on_event=events.append)
        assert turn.status == "done"
        previews = [preview_of(e) for e in events if e.type == "preview"]
        assert [p.step for p in previews if p] == [1, 2, 3, 4]
        steps = [e.data["step"] for e in events if e.type == "step"]
        assert steps == [1, 2, 3, 4]
        for preview in previews:
            assert preview is not None and len(preview.data) <= PREVIEW_MAX_BYTES
            path = preview.save(tmp_path / "previews", f"step-{preview.step}")
            assert Image.open(path).size == (preview.width, preview.height)
        # stored like every event: a stream replayed from the start has them too
        replay = [e.type for e in service.db.events_after(session.id, 0)]
        assert replay.count("preview") == 4
        # a normal turn streams none
        events.clear()
        client.wait(
            client.post_turn(session.id, plan=PLAN, settings=DrawSettings(seed=1, steps=2)), on_event=events.append
        )
        assert [e for e in events if e.type == "preview"] == []
        Image.open(io.BytesIO(client.get_image(turn.image_url or ""))).load()


def test_fast_mode_on_a_preset_without_weights_is_422(served: tuple) -> None:
    url, key, _, _ = served
    with StudioClient(url, api_key=key) as client:
        with pytest.raises(InvalidRequestError, match="fast mode needs few-step weights"):
            client.create_session(height=64, width=64, settings=DrawSettings(preset="plain", mode="fast"))
        session = client.create_session(height=64, width=64, settings=DrawSettings(preset="plain"))
        with pytest.raises(InvalidRequestError, match="previews"):
            client.post_turn(session.id, plan=PLAN, settings=DrawSettings(preset="plain", previews=True))
        with pytest.raises(InvalidRequestError, match="`fast`"):
            client.post_turn(session.id, plan=PLAN, settings=DrawSettings(preset="plain", mode="fast"))


def test_bad_mode_is_422_naming_the_field(served: tuple) -> None:
    import httpx

    url, key, _, _ = served
    answer = httpx.post(
        f"{url}/v1/sessions",
        json={"height": 64, "width": 64, "settings": {"mode": "turbo"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"][-1] == "mode"


# --- stories ------------------------------------------------------------------------------------------------


@pytest.fixture
def stories(tmp_path: Path) -> Iterator[tuple[TurnService, RecordingDrawer]]:
    from studio.story_runner import StoryRunner

    recorder = RecordingDrawer()
    service, _ = make_service(tmp_path, presets=_presets())
    service.stories = StoryRunner(service, recorder)
    service.start()
    yield service, recorder
    recorder.release.set()
    service.close()


def test_fast_story_draws_every_frame_in_fast_mode(stories: tuple) -> None:
    from studio.stories import StoryCreate

    service, recorder = stories
    story = service.stories.submit(
        "t", StoryCreate(prompts=["a fox", "a crow"], rounds=1, height=64, width=64, fast=True)
    )
    done = wait_story(service, story.id)
    assert done.status == "done" and len(recorder.calls) == 4
    for job, _ in recorder.calls:
        assert job.settings.mode == "fast" and job.settings.steps == 4 and job.settings.guidance_scale == 1.0
    assert story.request.steps == 4
    explicit = StoryCreate(prompts=["a"], fast=True, steps=6, guidance_scale=2.0)
    assert (explicit.steps, explicit.guidance_scale) == (6, 2.0)
    assert StoryCreate(prompts=["a"]).steps == 30


def test_fast_story_on_a_preset_without_weights_is_refused(stories: tuple) -> None:
    from studio.rejections import RequestRejected
    from studio.stories import StoryCreate

    service, recorder = stories
    with pytest.raises(RequestRejected, match="fast: preset 'plain'"):
        service.stories.submit("t", StoryCreate(prompts=["a"], height=64, width=64, fast=True, preset="plain"))
    assert recorder.calls == []


def test_chat_fast_saves_previews(tmp_path: Path, tiny: object) -> None:
    from typer.testing import CliRunner

    from entrypoints.cli import app

    service, engine = make_service(tmp_path / "server", port=free_port())
    engine.drawer = tiny
    key = service.db.create_key("cli")
    folder = tmp_path / "previews"
    args = ["--size", "64", "--seed", "0", "--fast", "--previews", str(folder), "--out", str(tmp_path / "chat")]
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        result = CliRunner().invoke(
            app,
            ["chat", "--url", server.url, "--api-key", key, *args],
            input="a girl on a bench\n\n",
            terminal_width=400,
        )
    assert result.exit_code == 0, result.output
    session = service.db.list_sessions("cli")[0]
    assert session.settings.mode == "fast" and session.settings.previews is True and session.settings.steps == 4
    saved = sorted(path.name for path in folder.iterdir())
    assert saved == [f"turn-001-step-{step:03d}.jpg" for step in (3, 4, 5, 6)]  # after 2 pre-render steps
    Image.open(folder / saved[-1]).load()
