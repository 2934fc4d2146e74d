"""Reference controls through the API and the SDK: several uploads per subject, the per-subject controls
(PATCH and plan items), the session's style reference, and 422s naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.client import AsyncStudioClient, InvalidRequestError, StudioClient
from entrypoints.server import BackgroundServer, free_port
from studio.reference_controls import ReferenceControls
from studio.service import TurnService
from tests.api.conftest import ScriptedEngine, make_service, png, wait_for_turn

PLAN = {
    "height": 64,
    "width": 64,
    "background": "a park",
    "items": [{"subject_id": "1", "phrase": "a cat", "box": {"x": 0, "y": 0, "w": 32, "h": 32}}],
}


def _session(client: TestClient, headers: dict[str, str], **body: object) -> str:
    answer = client.post("/v1/sessions", json={"height": 64, "width": 64, **body}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _upload(client: TestClient, headers: dict[str, str], session_id: str, shade: int, add: bool) -> object:
    files = {"file": ("ref.png", png(32, 32, (shade, 0, 0)), "image/png")}
    data = {"name": "cat", "subject_id": "1", **({"add": "true"} if add else {})}
    return client.post(f"/v1/sessions/{session_id}/subjects", data=data, files=files, headers=headers)


def _locs(answer: object) -> list[list[object]]:
    return [error["loc"] for error in answer.json()["detail"]]  # type: ignore[attr-defined]


def test_several_references_per_subject_reach_the_draw_and_survive_the_turn(client, keys, service) -> None:
    _, engine = service
    session_id = _session(client, keys["a"])
    first = _upload(client, keys["a"], session_id, 10, add=True).json()  # no reference yet: becomes the main one
    second = _upload(client, keys["a"], session_id, 20, add=True).json()
    assert second["reference_image_id"] == first["reference_image_id"]
    assert len(second["more_reference_image_ids"]) == 1
    patched = client.patch(
        f"/v1/sessions/{session_id}/subjects/1",
        json={"reference_combine": "tokens", "reference_window": [0.0, 0.6]},
        headers=keys["a"],
    )
    assert patched.status_code == 200, patched.text
    assert client.post(f"/v1/sessions/{session_id}/turns", json={"plan": PLAN}, headers=keys["a"]).status_code == 202
    assert wait_for_turn(client, keys["a"], session_id, 1)["status"] == "done"
    job = engine.drawer.jobs[-1]
    assert len(job.more_references["1"]) == 1 and job.more_references["1"][0] != job.references["1"]
    assert job.reference_controls == {"1": ReferenceControls(reference_combine="tokens", reference_window=(0.0, 0.6))}
    (after,) = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert after["more_reference_image_ids"] == second["more_reference_image_ids"]
    assert after["reference_combine"] == "tokens" and after["reference_window"] == [0.0, 0.6]
    image = after["more_reference_image_ids"][0]
    assert client.get(f"/v1/images/{image}", headers=keys["a"]).status_code == 200
    replaced = _upload(client, keys["a"], session_id, 30, add=False).json()
    assert replaced["more_reference_image_ids"] == [] and replaced["reference_combine"] == "tokens"


def test_a_branch_keeps_the_further_references_and_the_style_image_when_the_parent_goes(client, keys) -> None:
    session_id = _session(client, keys["a"])
    _upload(client, keys["a"], session_id, 10, add=True)
    more = _upload(client, keys["a"], session_id, 20, add=True).json()["more_reference_image_ids"][0]
    files = {"file": ("style.png", png(16, 16, (0, 9, 0)), "image/png")}
    style = client.post(f"/v1/sessions/{session_id}/style-reference", files=files, headers=keys["a"]).json()
    style_id = style["settings"]["style_reference"]["image_id"]
    assert client.post(f"/v1/sessions/{session_id}/turns", json={"plan": PLAN}, headers=keys["a"]).status_code == 202
    assert wait_for_turn(client, keys["a"], session_id, 1)["status"] == "done"
    branch = client.post(f"/v1/sessions/{session_id}/turns/1/branch", json={}, headers=keys["a"])
    assert branch.status_code == 201, branch.text
    assert client.delete(f"/v1/sessions/{session_id}", headers=keys["a"]).status_code == 204
    (subject,) = client.get(f"/v1/sessions/{branch.json()['id']}/subjects", headers=keys["a"]).json()
    assert subject["more_reference_image_ids"] == [more]
    for image_id in (more, style_id):
        assert client.get(f"/v1/images/{image_id}", headers=keys["a"]).status_code == 200


def test_a_subject_holds_at_most_eight_references(client, keys) -> None:
    session_id = _session(client, keys["a"])
    for shade in range(8):
        assert _upload(client, keys["a"], session_id, shade, add=True).status_code == 201
    refused = _upload(client, keys["a"], session_id, 99, add=True)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["msg"].startswith("add: ")
    (stored,) = client.get(f"/v1/sessions/{session_id}/subjects", headers=keys["a"]).json()
    assert len(stored["more_reference_image_ids"]) == 7


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reference_scale": -1}, "reference_scale"),
        ({"reference_scale": 6}, "reference_scale"),
        ({"reference_window": [0.7, 0.3]}, "reference_window"),
        ({"reference_window": [0.0]}, "reference_window"),
        ({"reference_combine": "sum"}, "reference_combine"),
    ],
)
def test_bad_controls_get_422_naming_the_field(client, keys, body: dict, field: str) -> None:
    session_id = _session(client, keys["a"])
    _upload(client, keys["a"], session_id, 1, add=False)
    answer = client.patch(f"/v1/sessions/{session_id}/subjects/1", json=body, headers=keys["a"])
    assert answer.status_code == 422
    assert any(loc[:2] == ["body", field] for loc in _locs(answer))
    item = {**PLAN["items"][0], **body}  # type: ignore[dict-item]
    plan = {**PLAN, "items": [item]}
    answer = client.post(f"/v1/sessions/{session_id}/turns", json={"plan": plan}, headers=keys["a"])
    assert answer.status_code == 422
    assert any(loc[:5] == ["body", "plan", "items", 0, field] for loc in _locs(answer))


def test_patch_null_resets_a_control_and_leaving_it_out_keeps_it(client, keys) -> None:
    session_id = _session(client, keys["a"])
    _upload(client, keys["a"], session_id, 1, add=False)
    path = f"/v1/sessions/{session_id}/subjects/1"
    assert client.patch(path, json={"reference_scale": 0.4}, headers=keys["a"]).json()["reference_scale"] == 0.4
    kept = client.patch(path, json={"name": "tabby"}, headers=keys["a"]).json()
    assert kept["reference_scale"] == 0.4 and kept["name"] == "tabby"
    assert client.patch(path, json={"reference_scale": None}, headers=keys["a"]).json()["reference_scale"] is None


def test_plan_item_controls_reach_the_draw(client, keys, service) -> None:
    _, engine = service
    session_id = _session(client, keys["a"])
    item = {**PLAN["items"][0], "reference_scale": 0.3, "reference_window": [0.2, 1.0]}  # type: ignore[dict-item]
    body = {"plan": {**PLAN, "items": [item]}}
    answer = client.post(f"/v1/sessions/{session_id}/turns", json=body, headers=keys["a"])
    assert answer.status_code == 202
    assert wait_for_turn(client, keys["a"], session_id, 1)["status"] == "done"
    drawn = engine.drawer.jobs[-1].plan.items[0]
    assert (drawn.reference_scale, drawn.reference_window) == (0.3, (0.2, 1.0))


def test_style_reference_per_session_and_per_turn(client, keys, service) -> None:
    _, engine = service
    session_id = _session(client, keys["a"])
    files = {"file": ("style.png", png(16, 16, (0, 200, 0)), "image/png")}
    answer = client.post(
        f"/v1/sessions/{session_id}/style-reference", data={"scale": "0.8"}, files=files, headers=keys["a"]
    )
    assert answer.status_code == 200, answer.text
    style = answer.json()["settings"]["style_reference"]
    assert style["scale"] == 0.8 and style["image_id"]
    assert client.get(f"/v1/sessions/{session_id}", headers=keys["a"]).json()["settings"]["style_reference"] == style
    assert client.post(f"/v1/sessions/{session_id}/turns", json={"plan": PLAN}, headers=keys["a"]).status_code == 202
    assert wait_for_turn(client, keys["a"], session_id, 1)["status"] == "done"
    job = engine.drawer.jobs[-1]
    assert job.style_reference == client.get(f"/v1/images/{style['image_id']}", headers=keys["a"]).content
    assert job.settings.style_reference.scale == 0.8
    # per turn: the turn's settings override the session's (here: no style at all)
    answer = client.post(f"/v1/sessions/{session_id}/turns", json={"plan": PLAN, "settings": {}}, headers=keys["a"])
    assert wait_for_turn(client, keys["a"], session_id, 2)["status"] == "done"
    assert engine.drawer.jobs[-1].style_reference is None
    # another session (same tenant) may name the image; another tenant may not
    assert _session(client, keys["a"], settings={"style_reference": {"image_id": style["image_id"]}})
    for headers, target in ((keys["a"], session_id), (keys["b"], None)):
        body = {"settings": {"style_reference": {"image_id": "nope" if target else style["image_id"]}}}
        if target is None:
            answer = client.post("/v1/sessions", json=body, headers=headers)
        else:
            answer = client.post(f"/v1/sessions/{target}/turns", json={"plan": PLAN, **body}, headers=headers)
        assert answer.status_code == 422
        assert answer.json()["detail"][0]["msg"].startswith("settings.style_reference.image_id: ")


def test_style_reference_upload_refuses_bad_scale_and_bad_images(client, keys) -> None:
    session_id = _session(client, keys["a"])
    path = f"/v1/sessions/{session_id}/style-reference"
    files = {"file": ("style.png", png(16, 16), "image/png")}
    for scale in ("3", "nan", "-0.1"):
        answer = client.post(path, data={"scale": scale}, files=files, headers=keys["a"])
        assert answer.status_code == 422 and any(loc[-1] == "scale" for loc in _locs(answer))
    bad = client.post(path, files={"file": ("x.png", b"not an image", "image/png")}, headers=keys["a"])
    assert bad.status_code in (400, 415, 422)
    assert client.post(path, files=files, headers=keys["b"]).status_code == 404
    settings = client.get(f"/v1/sessions/{session_id}", headers=keys["a"]).json()["settings"]
    assert settings["style_reference"]["image_id"] is None


# --- the SDK --------------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, TurnService, ScriptedEngine]]:
    service, engine = make_service(tmp_path, port=free_port())
    key = service.db.create_key("sdk")
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        yield server.url, key, service, engine
    engine.hold.set()


def test_sdk_round_trip_of_references_controls_and_style(served: tuple) -> None:
    url, key, _, engine = served
    with StudioClient(url, api_key=key) as client:
        session = client.create_session(title="refs", height=64, width=64)
        client.upload_reference(session.id, "cat", png(16, 16, (1, 0, 0)), subject_id="1")
        subject = client.upload_reference(session.id, "cat", png(16, 16, (2, 0, 0)), subject_id="1", add=True)
        assert len(subject.more_reference_image_ids) == 1
        subject = client.update_subject(session.id, "1", reference_scale=0.5, reference_window=(0.1, 0.9))
        assert subject.reference_scale == 0.5 and subject.reference_window == (0.1, 0.9)
        with pytest.raises(InvalidRequestError):
            client.update_subject(session.id, "1", reference_combine="sum")
        with pytest.raises(TypeError):
            client.update_subject(session.id, "1", reference_scael=0.5)
        styled = client.upload_style_reference(session.id, png(16, 16, (0, 0, 9)), scale=0.25)
        assert styled.settings.style_reference.scale == 0.25 and styled.settings.style_reference.image_id
        turn = client.draw_plan(session.id, PLAN)
        assert turn.status == "done"
    job = engine.drawer.jobs[-1]
    assert job.reference_controls["1"] == ReferenceControls(reference_scale=0.5, reference_window=(0.1, 0.9))
    assert len(job.more_references["1"]) == 1 and job.style_reference is not None

    async def run() -> None:
        async with AsyncStudioClient(url, api_key=key) as client:
            subject = await client.upload_reference(session.id, "cat", png(16, 16, (3, 0, 0)), subject_id="1", add=True)
            assert len(subject.more_reference_image_ids) == 2
            subject = await client.update_subject(session.id, "1", reference_combine="tokens")
            assert subject.reference_combine == "tokens"
            styled = await client.upload_style_reference(session.id, png(16, 16, (0, 0, 7)))
            assert styled.settings.style_reference.scale == 0.25, "scale left out: kept"

    asyncio.run(run())
