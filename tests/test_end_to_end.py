"""The whole turn loop on the real app with tiny random-weight models: API → agents graph → drawer
(Parallel-UNet, subject init) → vision (Grounding DINO + SAM) → memory → the next turn's drawer job."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from agents import build_engine
from agents.offline import OfflinePlanner
from api.app import create_app
from entrypoints.runtime import PresetDrawer, build_service
from studio.draw import DrawJob, DrawResult, DrawSettings
from studio.failures import DrawCancelled
from studio.protocols import StepCallback
from studio.settings import Settings, VisionSettings
from studio.turns import TurnRequest, TurnStatus
from tests.agents.fakes import FakeDrawer

SETTINGS = DrawSettings(steps=2, seed=7, prerender_steps=1, subject_init_steps=1, refine_step=1)


class RecordingDrawer(PresetDrawer):
    """The real preset drawer, remembering every job it was given."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.jobs: list[DrawJob] = []

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        self.jobs.append(job)
        return super().draw(job, on_step=on_step, cancel=cancel)


@pytest.fixture(scope="module")
def app_and_drawer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, RecordingDrawer, dict]]:
    # thresholds at 0 so the random-weight detector yields boxes that are matched to their subjects
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("e2e"),
        vision=VisionSettings(box_threshold=0.0, text_threshold=0.0, min_iou=0.0, device="cpu"),
    )
    drawer = RecordingDrawer(settings)
    service = build_service(settings, drawer=drawer)
    headers = {"Authorization": f"Bearer {service.db.create_key('e2e')}"}
    with TestClient(create_app(service)) as client:
        yield client, drawer, headers


def wait(client: TestClient, headers: dict, session_id: str, index: int) -> dict:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        turn = client.get(f"/v1/sessions/{session_id}/turns/{index}", headers=headers).json()
        if turn["status"] in ("done", "failed"):
            return turn
        time.sleep(0.05)
    raise AssertionError("turn did not finish")


def whole_canvas_plan(height: int, width: int) -> dict:
    box = {"x": 0, "y": 0, "w": width, "h": height}
    return {
        "height": height,
        "width": width,
        "background": "a street",
        "items": [
            {"subject_id": "1", "phrase": "a girl", "box": box},
            {"subject_id": "2", "phrase": "a boy", "box": box},
        ],
    }


def test_explicit_plan_turns_feed_the_next_turn_exactly_the_crops_of_the_previous(app_and_drawer: tuple) -> None:
    client, drawer, headers = app_and_drawer
    session = client.post(
        "/v1/sessions", json={"height": 64, "width": 96, "settings": SETTINGS.model_dump()}, headers=headers
    ).json()
    url = f"/v1/sessions/{session['id']}/turns"
    assert client.post(url, json={"plan": whole_canvas_plan(64, 96)}, headers=headers).status_code == 202
    first = wait(client, headers, session["id"], 1)
    assert first["status"] == "done", first["error"]
    image = Image.open(io.BytesIO(client.get(first["image_url"], headers=headers).content))
    assert image.format == "PNG" and image.size == (96, 64)
    assert client.get(first["debug_image_url"], headers=headers).status_code == 200
    assert {"denoise"} <= set(first["timings"])
    subjects = {s["id"]: s for s in client.get(f"/v1/sessions/{session['id']}/subjects", headers=headers).json()}
    assert set(subjects) == {"1", "2"}
    assert all(c["found"] for c in first["crops"]), first["crops"]
    assert all(s["reference_image_id"] and s["reference_source"] == "final" for s in subjects.values()), subjects
    jobs_before = len(drawer.jobs)
    client.post(url, json={"plan": whole_canvas_plan(64, 96)}, headers=headers)
    assert wait(client, headers, session["id"], 2)["status"] == "done"
    (second_job,) = drawer.jobs[jobs_before:]
    expected = {sid: client.get(s["reference_url"], headers=headers).content for sid, s in subjects.items()}
    assert second_job.references == expected
    assert drawer.jobs[jobs_before - 1].references == {}  # turn 1 had no references yet


def test_message_turns_go_through_the_agents_graph(app_and_drawer: tuple) -> None:
    client, _, headers = app_and_drawer
    session = client.post(
        "/v1/sessions", json={"height": 64, "width": 64, "settings": SETTINGS.model_dump()}, headers=headers
    ).json()
    url = f"/v1/sessions/{session['id']}/turns"
    client.post(url, json={"message": "a girl and a dog in the park"}, headers=headers)
    client.post(url, json={"message": "she throws a ball to the dog"}, headers=headers)
    first, second = wait(client, headers, session["id"], 1), wait(client, headers, session["id"], 2)
    assert first["status"] == second["status"] == "done", (first["error"], second["error"])
    ids_first = {item["subject_id"] for item in first["plan"]["items"]}
    ids_second = {item["subject_id"] for item in second["plan"]["items"]}
    assert len(ids_first) == 2 and ids_first <= ids_second  # "she" and "the dog" keep their ids
    assert first["info"], "the turn records planner info (prompt versions, calls, rounds)"
    events = client.app.state.service.db.events_after(session["id"], 0)
    first_turn = [e.type for e in events if e.turn_index == 1 and e.type != "step"]
    assert first_turn == ["queued", "planning", "planned", "drawing", "done"]


def test_an_undecodable_upload_never_reaches_the_drawer_and_bad_plans_fail_cleanly(app_and_drawer: tuple) -> None:
    client, _, headers = app_and_drawer
    session = client.post(
        "/v1/sessions", json={"height": 64, "width": 64, "settings": SETTINGS.model_dump()}, headers=headers
    ).json()
    too_many = {
        "height": 64,
        "width": 64,
        "items": [
            {"subject_id": str(i), "phrase": f"cat {i}", "box": {"x": 0, "y": 0, "w": 8, "h": 8}} for i in range(1, 12)
        ],
    }
    response = client.post(f"/v1/sessions/{session['id']}/turns", json={"plan": too_many}, headers=headers)
    assert response.status_code == 422 and "at most 8" in str(response.json()["detail"])


class CountingPlanner:
    """The offline planner, counting its subject-manager and layout calls."""

    def __init__(self) -> None:
        self.inner = OfflinePlanner()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.inner, name)
        if callable(attribute):

            def counted(*args: object, **kwargs: object) -> object:
                self.calls.append(name)
                return attribute(*args, **kwargs)

            return counted
        return attribute


class BlockingDrawer:
    """Waits until released, then honours the cancel event like a real drawer between two steps."""

    def __init__(self) -> None:
        self.inner = FakeDrawer()
        self.started = threading.Event()
        self.release = threading.Event()

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        self.started.set()
        self.release.wait(10)
        if cancel is not None and cancel.is_set():
            raise DrawCancelled
        return self.inner.draw(job, on_step=on_step, cancel=cancel)


def test_service_shutdown_mid_draw_resumes_from_the_graph_checkpoint_without_replanning(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    drawer, planner = BlockingDrawer(), CountingPlanner()
    first = build_service(settings, drawer=drawer)
    first.engine = build_engine(settings, drawer, first.images, planner=planner)
    session = first.create_session("t", "", 64, 64, SETTINGS)
    first.submit_turn(session, TurnRequest(message="a girl and a dog in the park"))
    assert drawer.started.wait(30)
    planned_calls = list(planner.calls)
    assert planned_calls, "the turn was planned before drawing"
    first.close(wait=False)  # SIGTERM while drawing
    drawer.release.set()
    time.sleep(0.3)
    assert first.db.get_turn(session.id, 1).status == TurnStatus.DRAWING
    first.engine.close()

    second_planner = CountingPlanner()
    second = build_service(settings, drawer=drawer.inner)
    second.engine = build_engine(settings, drawer.inner, second.images, planner=second_planner)
    second.start()
    deadline = time.monotonic() + 30
    while not second.db.get_turn(session.id, 1).status.finished and time.monotonic() < deadline:
        time.sleep(0.05)
    turn = second.db.get_turn(session.id, 1)
    assert turn.status == TurnStatus.DONE, turn.error
    assert turn.info.get("resumed") is True
    assert second_planner.calls == []  # no node before draw ran again
    assert len(drawer.inner.jobs) == 1 and [s.id for s in second.db.list_subjects(session.id)] == ["1", "2"]
    second.close()
