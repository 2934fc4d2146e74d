"""PATCH /v1/sessions/{id}/subjects/{subject_id}: rename a subject, keeping its reference and history."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import png


def upload(client: TestClient, headers: dict[str, str], session_id: str, name: str) -> dict:
    files = {"file": ("ref.png", png(32, 32), "image/png")}
    answer = client.post(f"/v1/sessions/{session_id}/subjects", data={"name": name}, files=files, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_rename_keeps_the_reference_and_changes_only_the_given_fields(client, keys) -> None:
    session_id = client.post("/v1/sessions", json={}, headers=keys["a"]).json()["id"]
    before = upload(client, keys["a"], session_id, "cat")
    path = f"/v1/sessions/{session_id}/subjects/{before['id']}"
    answer = client.patch(path, json={"name": "tabby"}, headers=keys["a"])
    assert answer.status_code == 200, answer.text
    (stored,) = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert stored == {**before, "name": "tabby"}
    assert client.patch(path, json={"description": "striped"}, headers=keys["a"]).status_code == 200
    (stored,) = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert stored == {**before, "name": "tabby", "description": "striped"}


def test_rename_refuses_bad_text_unknown_subjects_and_other_tenants(client, keys) -> None:
    session_id = client.post("/v1/sessions", json={}, headers=keys["a"]).json()["id"]
    subject = upload(client, keys["a"], session_id, "cat")
    path = f"/v1/sessions/{session_id}/subjects/{subject['id']}"
    assert client.patch(path, json={"name": "a\x00b"}, headers=keys["a"]).status_code == 422
    assert client.patch(path, json={"name": ""}, headers=keys["a"]).status_code == 422
    unknown = f"/v1/sessions/{session_id}/subjects/99"
    assert client.patch(unknown, json={"name": "x"}, headers=keys["a"]).status_code == 404
    assert client.patch(path, json={"name": "x"}, headers=keys["b"]).status_code == 404
    (stored,) = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert stored["name"] == "cat"


def test_the_studio_is_served_at_the_root_without_shadowing_the_api(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<script type="module" src="app.js">' in page.text
    assert client.get("/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/openapi.json").json()["info"]["title"] == "AutoStudio service"
    assert client.get("/v1/sessions").status_code == 401
    assert client.get("/v1/no-such-route").status_code == 404
