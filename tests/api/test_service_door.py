"""The routes only translate HTTP: idempotency conflicts, the queue cap and uploads come from the service;
image URLs are added by api/urls.py alone (the service stores and emits ids)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from api.client import _image_path
from api.routes_turns import _sse
from api.urls import image_url
from studio.turns import TurnEvent
from tests.api.conftest import make_service, png, wait_for_turn
from tests.api.test_api import new_session, plan_body


def test_an_idempotency_key_reused_with_another_body_gets_422(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/turns"
    headers = {**keys["a"], "Idempotency-Key": "order-1"}
    first = client.post(url, json={"message": "a girl"}, headers=headers)
    replay = client.post(url, json={"message": "a girl"}, headers=headers)
    assert (first.status_code, replay.status_code) == (202, 202) and replay.json()["id"] == first.json()["id"]
    other = client.post(url, json={"message": "a boy"}, headers=headers)
    assert other.status_code == 422 and "different request body" in json.dumps(other.json())
    assert len(client.get(url, headers=keys["a"]).json()) == 1
    assert "different body is refused with 422" in client.get("/openapi.json").text


def test_urls_are_added_by_the_api_from_stored_ids(client: TestClient, keys: dict, service: tuple) -> None:
    session_id = new_session(client, keys["a"])
    client.post(f"/v1/sessions/{session_id}/turns", json=plan_body(), headers=keys["a"])
    turn = wait_for_turn(client, keys["a"], session_id, 1)
    assert turn["image_url"] == image_url(turn["image_id"])
    (crop,) = turn["crops"]
    assert crop["crop_url"] == image_url(crop["crop_image_id"])
    assert client.get(crop["crop_url"], headers=keys["a"]).status_code == 200

    db = service[0].db
    (stored_crop,) = db.get_turn(session_id, 1).crops
    assert stored_crop.crop_url is None  # the service stores ids, never URLs
    done = next(e for e in db.events_after(session_id, 0) if e.type == "done")
    assert "image_url" not in done.data
    assert json.loads(_sse(done)["data"])["data"]["image_url"] == image_url(turn["image_id"])

    # an event stored by the first release (with its URL) is served unchanged
    old = TurnEvent.model_validate({"seq": 9, "type": "done", "data": {"image_id": "ab", "image_url": "/v1/images/ab"}})
    assert json.loads(_sse(old)["data"])["data"]["image_url"] == "/v1/images/ab"
    assert _image_path("ab") == image_url("ab") and _image_path("/v1/images/ab") == "/v1/images/ab"


def test_upload_errors_are_translated_from_the_service(client: TestClient, keys: dict) -> None:
    session_id = new_session(client, keys["a"])
    url = f"/v1/sessions/{session_id}/subjects"
    files = {"file": ("ref.png", png(8, 8), "image/png")}
    bad_id = client.post(url, headers=keys["a"], data={"name": "girl", "subject_id": "2-1"}, files=files)
    assert bad_id.status_code == 422 and "parent '2' is unknown" in json.dumps(bad_id.json())
    uploaded = client.post(url, headers=keys["a"], data={"name": "girl"}, files=files)
    assert uploaded.status_code == 201
    assert uploaded.json()["reference_url"] == image_url(uploaded.json()["reference_image_id"])


def test_the_sdk_shares_the_url_function_without_importing_fastapi() -> None:
    code = "import sys, api.client; assert 'fastapi' not in sys.modules and 'starlette' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_a_full_queue_is_429_with_retry_after(tmp_path: Path) -> None:
    service, engine = make_service(tmp_path, max_queued_turns=1)
    engine.hold.clear()
    try:
        with TestClient(create_app(service)) as client:
            headers = {"Authorization": f"Bearer {service.db.create_key('t')}"}
            url = f"/v1/sessions/{new_session(client, headers)}/turns"
            assert client.post(url, json={"message": "x"}, headers=headers).status_code == 202
            full = client.post(url, json={"message": "y"}, headers=headers)
            assert full.status_code == 429 and full.headers["Retry-After"] == "2"
            assert "1 turns are already waiting" in json.dumps(full.json())
    finally:
        engine.hold.set()
