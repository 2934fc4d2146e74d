"""Every error answer has the documented shape: 422 always a list of {loc, msg, type} (also when a route
refuses a request after validation), every other error a message string; and the SDK reads both."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.app import create_app
from api.client import InvalidRequestError, StudioClient
from api.errors import ErrorMessage, ValidationErrorBody
from entrypoints.server import BackgroundServer, free_port
from tests.api.conftest import make_service, png, wait_for_turn

BOX = {"x": 0, "y": 0, "w": 32, "h": 32}
PLAN = {"height": 64, "width": 64, "items": [{"subject_id": "1", "phrase": "a dog", "box": BOX}]}


def _upload(client: TestClient, headers: dict, session_id: str, data: bytes, **form: str):
    return client.post(
        f"/v1/sessions/{session_id}/subjects",
        headers=headers,
        data={"name": "girl", **form},
        files={"file": ("ref.png", data, "image/png")},
    )


def test_every_422_is_a_list_of_field_errors_and_every_other_error_a_message(client: TestClient, keys: dict) -> None:
    a = keys["a"]
    session_id = client.post("/v1/sessions", json={"height": 64, "width": 64}, headers=a).json()["id"]
    url = f"/v1/sessions/{session_id}/turns"
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    unprocessable = {
        "schema": client.post(
            url, json={"plan": {**PLAN, "items": [{**PLAN["items"][0], "box": {**BOX, "w": -1}}]}}, headers=a
        ),
        "canvas over the preset": client.post(url, json={"plan": {**PLAN, "height": 1536}}, headers=a),
        "unknown preset": client.post(url, json={"message": "x", "settings": {"preset": "nope"}}, headers=a),
        "edit without an image": client.post(
            url, json={"plan": {**PLAN, "edit": {"regenerate_subject_ids": ["1"]}}}, headers=a
        ),
        "session canvas": client.post("/v1/sessions", json={"height": 100}, headers=a),
        "not an image": _upload(client, a, session_id, b"not an image"),
        "unknown parent": _upload(client, a, session_id, png(8, 8), subject_id="7-1"),
        "bad query": client.get("/v1/sessions?limit=0", headers=a),
        "malformed json": client.post(url, content=b"{", headers={**a, "Content-Type": "application/json"}),
    }
    for why, response in unprocessable.items():
        assert response.status_code == 422, (why, response.text)
        body = ValidationErrorBody.model_validate(response.json())
        assert set(response.json()["detail"][0]) == {"loc", "msg", "type"}, why  # input is never echoed
        assert body.detail[0].loc[0] in ("body", "query"), why
    assert "1024" in unprocessable["canvas over the preset"].json()["detail"][0]["msg"]
    client.post(url, json={"plan": PLAN}, headers=a)
    wait_for_turn(client, a, session_id, 1)
    others = {
        401: client.get("/v1/sessions"),
        404: client.get("/v1/sessions/nope", headers=a),
        409: client.post(f"{url}/1/cancel", headers=a),
        415: _upload(client, a, session_id, gif.getvalue()),
    }
    for status, response in others.items():
        assert response.status_code == status, response.text
        ErrorMessage.model_validate(response.json())


def test_the_sdk_reports_which_field_was_refused(tmp_path: Path) -> None:
    service, engine = make_service(tmp_path, port=free_port())
    key = service.db.create_key("sdk")
    server = BackgroundServer(service.settings, app=create_app(service))
    with server, StudioClient(server.url, api_key=key) as client:
        session = client.create_session(height=64, width=64)
        with pytest.raises(InvalidRequestError) as caught:
            client.post_turn(session.id, plan={**PLAN, "height": 1536})
    assert caught.value.status == 422 and isinstance(caught.value.detail, list)
    assert "body: height 1536 exceeds the maximum of 1024" in str(caught.value)
    engine.hold.set()
