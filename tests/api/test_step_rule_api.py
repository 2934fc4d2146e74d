"""The API applies DrawSettings' step rule: unset step counts follow `steps`, a combination that cannot run
subject init is a 422 naming the field."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_session_steps_scale_the_unset_step_counts(client: TestClient, keys: dict) -> None:
    body = {"height": 64, "width": 64, "settings": {"steps": 2, "prerender_steps": 4}}
    response = client.post("/v1/sessions", json=body, headers=keys["a"])
    assert response.status_code == 201, response.text
    settings = response.json()["settings"]
    assert settings["subject_init"] is True
    assert (settings["subject_init_steps"], settings["prerender_steps"], settings["refine_step"]) == (1, 4, 1)


def test_subject_init_without_steps_is_a_422_naming_the_field(client: TestClient, keys: dict) -> None:
    body = {"height": 64, "width": 64, "settings": {"steps": 10, "subject_init_steps": 0}}
    response = client.post("/v1/sessions", json=body, headers=keys["a"])
    assert response.status_code == 422 and "subject_init_steps=0" in response.text
