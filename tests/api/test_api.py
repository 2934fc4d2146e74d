"""The REST API against the real app (scripted engine): lifecycle, validation, ordering, idempotency,
tenant isolation, uploads, events, metrics, crash recovery."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import UnsafeConfiguration, create_app
from studio.draw import DrawSettings
from studio.turns import Turn, TurnEvent, TurnRequest, TurnStatus
from tests.api.conftest import make_service, png, png_bomb, wait_for_turn


def plan_body(height: int = 64, width: int = 96) -> dict:
    return {
        "plan": {
            "height": height,
            "width": width,
            "caption": "a girl on a street",
            "background": "a street",
            "items": [{"subject_id": "1", "phrase": "a girl", "box": {"x": 4, "y": 4, "w": 40, "h": 50}}],
        }
    }


def new_session(client: TestClient, headers: dict[str, str], **body: object) -> str:
    response = client.post("/v1/sessions", json={"height": 64, "width": 96, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v1/sessions/{session_id}/turns" in paths and "/v1/sessions/{session_id}/events" in paths


def test_requests_without_a_valid_key_are_refused(client: TestClient) -> None:
    assert client.get("/v1/sessions").status_code == 401
    assert client.get("/v1/sessions", headers={"Authorization": "Bearer sk-studio-nope"}).status_code == 401


def test_explicit_plan_turn_runs_to_a_png_of_the_planned_size(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    response = client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    assert response.status_code == 202
    assert response.json()["status"] == "queued" and response.json()["index"] == 1
    turn = wait_for_turn(client, keys["a"], session_id, 1)
    assert turn["status"] == "done", turn
    image = Image.open(io.BytesIO(client.get(turn["image_url"], headers=keys["a"]).content))
    assert image.format == "PNG" and image.size == (96, 64)
    assert turn["crops"][0]["found"] and turn["timings"]["turn_total"] > 0
    subjects = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert [s["id"] for s in subjects] == ["1"] and subjects[0]["reference_url"]
    assert client.get(subjects[0]["reference_url"], headers=keys["a"]).status_code == 200


def test_session_lifecycle(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"], title="mine")
    assert [s["id"] for s in client.get("/v1/sessions", headers=keys["a"]).json()] == [session_id]
    assert client.get(f"/v1/sessions/{session_id}", headers=keys["a"]).json()["title"] == "mine"
    assert client.delete(f"/v1/sessions/{session_id}", headers=keys["a"]).status_code == 204
    assert client.get(f"/v1/sessions/{session_id}", headers=keys["a"]).status_code == 404


def test_bad_turn_requests_get_4xx_naming_the_problem(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/turns"
    bad_box = plan_body()
    bad_box["plan"]["items"][0]["box"]["w"] = -1
    response = client.post(url, json=bad_box, headers=keys["a"])
    assert response.status_code == 422 and "w" in str(response.json()["detail"])
    both = {"message": "hi", **plan_body()}
    assert "exactly one" in str(client.post(url, json=both, headers=keys["a"]).json()["detail"])
    too_big = plan_body(height=4096)
    assert client.post(url, json=too_big, headers=keys["a"]).status_code == 422
    over_preset = plan_body(height=1536)  # the tiny preset allows 1024
    response = client.post(url, json=over_preset, headers=keys["a"])
    assert response.status_code == 422 and "1024" in str(response.json()["detail"])
    assert client.get(url, headers=keys["a"]).json() == []  # nothing half-written
    bad_session = client.post("/v1/sessions", json={"height": 100, "width": 64}, headers=keys["a"])
    assert bad_session.status_code == 422


def test_idempotent_retry_returns_the_same_turn_and_draws_once(client: TestClient, keys: dict, service: tuple) -> None:
    session_id = new_session(client, keys["a"])
    headers = {**keys["a"], "Idempotency-Key": "retry-1"}
    first = client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=headers).json()
    second = client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=headers).json()
    assert first["id"] == second["id"]
    wait_for_turn(client, keys["a"], session_id, 1)
    assert len(client.get(f"/v1/sessions/{session_id}/turns", headers=keys["a"]).json()) == 1
    assert len(service[1].drawer.jobs) == 1


def test_turns_of_one_session_run_strictly_in_order(client: TestClient, keys: dict, service: tuple) -> None:
    engine = service[1]
    engine.hold.clear()
    session_id = new_session(client, keys["a"])
    other = new_session(client, keys["a"])
    for message in ("one", "two", "three"):
        assert (
            client.post(f"/v1/sessions/{session_id}/turns", json={"message": message}, headers=keys["a"]).status_code
            == 202
        )
    client.post(f"/v1/sessions/{other}/turns", json={"message": "other"}, headers=keys["a"])
    time.sleep(0.3)
    # with 4 worker threads, only the first turn of each session may have started
    assert sorted((s, i) for s, i, _ in engine.started) == sorted([(session_id, 1), (other, 1)])
    engine.hold.set()
    for index in (1, 2, 3):
        assert wait_for_turn(client, keys["a"], session_id, index)["status"] == "done"
    mine = [(i, t0) for s, i, t0 in engine.started if s == session_id]
    ends = {i: t1 for s, i, t1 in engine.finished if s == session_id}
    assert [i for i, _ in mine] == [1, 2, 3]
    assert all(start >= ends[index - 1] for index, start in mine if index > 1)


def test_a_failed_turn_leaves_the_session_usable(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    client.post(f"/v1/sessions/{session_id}/turns", json={"message": "please fail"}, headers=keys["a"])
    client.post(f"/v1/sessions/{session_id}/turns", json={"message": "a girl"}, headers=keys["a"])
    failed = wait_for_turn(client, keys["a"], session_id, 1)
    assert failed["status"] == "failed" and "scripted planner failure" in failed["error"]
    assert wait_for_turn(client, keys["a"], session_id, 2)["status"] == "done"


def test_other_tenants_get_404_for_everything(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    turn = wait_for_turn(client, keys["a"], session_id, 1)
    b = keys["b"]
    assert client.get(f"/v1/sessions/{session_id}", headers=b).status_code == 404
    assert client.get(f"/v1/sessions/{session_id}/turns/1", headers=b).status_code == 404
    assert client.get(f"/v1/sessions/{session_id}/turns", headers=b).status_code == 404
    assert client.get(f"/v1/sessions/{session_id}/subjects", headers=b).status_code == 404
    assert client.get(f"/v1/sessions/{session_id}/events", headers=b).status_code == 404
    assert client.get(turn["image_url"], headers=b).status_code == 404
    assert client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=b).status_code == 404
    assert client.delete(f"/v1/sessions/{session_id}", headers=b).status_code == 404
    assert client.get("/v1/sessions", headers=b).json() == []
    assert client.get(turn["image_url"], headers=keys["a"]).status_code == 200


def _upload(client: TestClient, headers: dict, session_id: str, data: bytes, name: str = "girl"):
    return client.post(
        f"/v1/sessions/{session_id}/subjects",
        headers=headers,
        data={"name": name},
        files={"file": ("ref.png", data, "image/png")},
    )


def test_bad_uploads_get_4xx_and_store_nothing(client: TestClient, keys: dict, service: tuple, tmp_path: Path) -> None:
    session_id = new_session(client, keys["a"])
    assert _upload(client, keys["a"], session_id, b"this is not an image").status_code == 422
    assert _upload(client, keys["a"], session_id, b"").status_code == 422
    assert _upload(client, keys["a"], session_id, png(600, 600) + b"\x00" * 300_000).status_code == 413
    assert _upload(client, keys["a"], session_id, png_bomb()).status_code == 413
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    assert _upload(client, keys["a"], session_id, gif.getvalue()).status_code == 415
    assert client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json() == []
    assert not list((tmp_path / "images").rglob("*.png"))


def test_upload_sets_a_reference_that_drawn_crops_never_replace(client: TestClient, keys: dict, service: tuple) -> None:
    session_id = new_session(client, keys["a"])
    response = _upload(client, keys["a"], session_id, png(32, 48, (0, 200, 0)))
    assert response.status_code == 201, response.text
    uploaded = response.json()
    assert uploaded["id"] == "1" and uploaded["reference_source"] == "upload"
    client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    wait_for_turn(client, keys["a"], session_id, 1)
    (subject,) = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert subject["reference_image_id"] == uploaded["reference_image_id"]
    job = service[1].drawer.jobs[-1]
    assert Image.open(io.BytesIO(job.references["1"])).size == (32, 48)  # the drawer got the upload


def test_too_many_waiting_turns_get_429(tmp_path: Path) -> None:
    service, engine = make_service(tmp_path, max_queued_turns=2)
    engine.hold.clear()
    try:
        with TestClient(create_app(service)) as client:
            headers = {"Authorization": f"Bearer {service.db.create_key('t')}"}
            session_id = new_session(client, headers)
            url = f"/v1/sessions/{session_id}/turns"
            assert [client.post(url, json={"message": "x"}, headers=headers).status_code for _ in range(3)] == [
                202,
                202,
                429,
            ]
    finally:
        engine.hold.set()


def test_metrics_count_finished_turns(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    wait_for_turn(client, keys["a"], session_id, 1)
    text = client.get("/metrics").text
    assert 'studio_turns_total{status="done"} 1.0' in text
    assert "studio_http_requests_total" in text


def test_unfinished_turns_are_resumed_by_a_new_process(tmp_path: Path) -> None:
    first, _ = make_service(tmp_path)
    session = first.db.create_session("t", "", 64, 96, DrawSettings())
    turn, _ = first.db.create_turn(session.id, TurnRequest(message="a girl"), None)
    first.db.set_turn_status(turn.id, TurnStatus.DRAWING)  # the process died while drawing
    first.close()
    second, engine = make_service(tmp_path)
    second.start()
    deadline = time.monotonic() + 10
    while second.db.get_turn(session.id, 1).status != TurnStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert second.db.get_turn(session.id, 1).status == TurnStatus.DONE
    assert [(s, i) for s, i, _ in engine.started] == [(session.id, 1)]
    second.close()


def test_auth_cannot_be_switched_off_off_loopback(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, host="0.0.0.0", auth={"enabled": False})
    with pytest.raises(UnsafeConfiguration):
        create_app(service)
    local, _ = make_service(tmp_path / "local", host="127.0.0.1", auth={"enabled": False})
    with TestClient(create_app(local)) as client:
        assert client.get("/v1/sessions").status_code == 200


def test_cancel_a_queued_turn_and_409_for_a_finished_one(client: TestClient, keys: dict, service: tuple) -> None:
    engine = service[1]
    engine.hold.clear()
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/turns"
    client.post(url, json={"message": "first"}, headers=keys["a"])
    client.post(url, json={"message": "second"}, headers=keys["a"])
    assert client.post(f"{url}/2/cancel", headers=keys["a"]).status_code == 202
    assert client.post(f"{url}/2/cancel", headers=keys["b"]).status_code == 404
    engine.hold.set()
    assert wait_for_turn(client, keys["a"], session_id, 1)["status"] == "done"
    cancelled = wait_for_turn(client, keys["a"], session_id, 2)
    assert cancelled["status"] == "failed" and cancelled["error"] == "cancelled"
    assert [i for s, i, _ in engine.started if s == session_id] == [1]  # the cancelled turn never ran
    assert client.post(f"{url}/1/cancel", headers=keys["a"]).status_code == 409
    assert client.post(f"{url}/9/cancel", headers=keys["a"]).status_code == 404


def test_shutdown_leaves_a_running_turn_unfinished_and_the_next_process_finishes_it(tmp_path: Path) -> None:
    first, engine = make_service(tmp_path)
    engine.hold.clear()
    session = first.db.create_session("t", "", 64, 96, DrawSettings())
    first.submit_turn(session, TurnRequest(message="a girl"))
    deadline = time.monotonic() + 10
    while not engine.started and time.monotonic() < deadline:
        time.sleep(0.01)
    first.close(wait=False)  # e.g. SIGTERM while the turn is being drawn
    engine.hold.set()
    time.sleep(0.3)
    assert first.db.get_turn(session.id, 1).status not in (TurnStatus.DONE, TurnStatus.FAILED)
    second, _ = make_service(tmp_path)
    second.start()
    deadline = time.monotonic() + 10
    while second.db.get_turn(session.id, 1).status != TurnStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert second.db.get_turn(session.id, 1).status == TurnStatus.DONE
    second.close()


def test_a_turn_whose_failure_cannot_be_recorded_does_not_block_its_session(
    client: TestClient, keys: dict, service: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = service[0]
    real_fail = svc._fail
    calls = []

    def database_down_once(turn: Turn, reason: str, info: dict | None = None) -> None:
        calls.append(reason)
        if len(calls) == 1:
            raise ConnectionError("database unavailable")
        return real_fail(turn, reason, info)

    monkeypatch.setattr(svc, "_fail", database_down_once)
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/turns"
    client.post(url, json={"message": "please fail"}, headers=keys["a"])
    time.sleep(0.3)  # the failure could not be written: the turn stays unfinished
    client.post(url, json={"message": "a girl"}, headers=keys["a"])
    first = wait_for_turn(client, keys["a"], session_id, 1)
    assert first["status"] == "failed" and "scripted planner failure" in first["error"]  # retried, recorded
    assert wait_for_turn(client, keys["a"], session_id, 2)["status"] == "done"


def test_a_reference_uploaded_while_a_turn_runs_survives_that_turn(
    client: TestClient, keys: dict, service: tuple
) -> None:
    engine = service[1]
    session_id = new_session(client, keys["a"])
    client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    wait_for_turn(client, keys["a"], session_id, 1)  # subject 1 now has a crop of turn 1
    engine.hold.clear()
    client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    time.sleep(0.2)  # turn 2 is running with the memory as it was
    girl = _upload(client, keys["a"], session_id, png(20, 20, (1, 2, 3)), name="a girl").json()
    cat = _upload(client, keys["a"], session_id, png(20, 20, (4, 5, 6)), name="cat").json()
    engine.hold.set()
    assert wait_for_turn(client, keys["a"], session_id, 2)["status"] == "done"
    subjects = {s["id"]: s for s in client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()}
    assert girl["id"] == "1" and subjects["1"]["reference_image_id"] == girl["reference_image_id"]
    assert subjects["1"]["reference_source"] == "upload" and subjects["1"]["refreshed_turn"] == 1
    assert subjects[cat["id"]]["reference_image_id"] == cat["reference_image_id"]


def test_requests_that_would_fail_later_are_refused_up_front(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/turns"
    bad_preset = client.post(url, json={"message": "a girl", "settings": {"preset": "nope"}}, headers=keys["a"])
    assert bad_preset.status_code == 422 and "unknown model preset" in str(bad_preset.json()["detail"])
    long_name = plan_body()
    long_name["plan"]["items"][0]["name"] = "x" * 101
    assert client.post(url, json=long_name, headers=keys["a"]).status_code == 422
    long_id = plan_body()
    long_id["plan"]["items"][0]["subject_id"] = "1" * 17
    assert client.post(url, json=long_id, headers=keys["a"]).status_code == 422
    edit = plan_body()
    edit["plan"]["edit"] = {"regenerate_subject_ids": ["1"]}
    response = client.post(url, json=edit, headers=keys["a"])
    assert response.status_code == 422 and "earlier finished turn" in str(response.json()["detail"])
    for path in (f"{url}/{10**20}", f"{url}/0", f"/v1/sessions?offset={10**20}"):
        assert client.get(path, headers=keys["a"]).status_code == 422, path
    assert client.post(f"{url}/{10**20}/cancel", headers=keys["a"]).status_code == 422
    assert client.get(url, headers=keys["a"]).json() == []


def test_live_listeners_receive_events_in_sequence_order(service: tuple) -> None:
    import random
    import threading

    svc = service[0]
    session = svc.db.create_session("t", "", 64, 64, DrawSettings())
    turn, _ = svc.db.create_turn(session.id, TurnRequest(message="x"), None)
    seen: list[int] = []

    def slow_listener(event: TurnEvent) -> None:
        time.sleep(random.random() / 500)  # a thread may be preempted between numbering and publishing
        seen.append(event.seq)

    svc.bus.subscribe(session.id, slow_listener)
    threads = [
        threading.Thread(target=lambda: [svc._emit(turn, "step", {"step": k, "total": 10}) for k in range(10)])
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == sorted(seen) and len(seen) == 60
