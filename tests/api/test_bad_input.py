"""Hostile input to every request model, on SQLite and on the real PostgreSQL: non-finite and out-of-range
numbers, control characters, oversized plans. Each is a 422 naming the field; nothing reaches the database.
The fields are found by walking the request models of the app's routes, so a new field is covered too."""

from __future__ import annotations

import json
import threading
import types
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

from api.app import MAX_JSON_BODY_BYTES, create_app
from api.routes_subjects import SubjectPatch
from studio.draw import DrawSettings
from studio.turns import SessionCreate, TurnRequest
from tests.api.conftest import make_service, png
from tests.postgres import fresh_postgres_database

Path_ = tuple[str | int, ...]

BOX = {"x": 4, "y": 4, "w": 40, "h": 40}
SETTINGS = DrawSettings().model_dump(mode="json")
CONTROLS = {"reference_scale": 1.0, "reference_window": [0.0, 1.0], "reference_combine": "average"}
BASE_BODIES: dict[type[BaseModel], dict[str, Any]] = {
    SessionCreate: {"title": "t", "height": 64, "width": 64, "settings": SETTINGS},
    TurnRequest: {
        "plan": {
            "height": 64,
            "width": 64,
            "caption": "c",
            "background": "b",
            "negative": "n",
            "items": [
                {
                    "subject_id": "1",
                    "phrase": "a girl",
                    "name": "girl",
                    "box": BOX,
                    **CONTROLS,
                    "mask": {"polygon": [[4, 4], [44, 4], [44, 44]]},  # regions: its vertices are floats too
                }
            ],
            "edit": {"regenerate_subject_ids": ["1"], "regenerate_boxes": [BOX], "strength": 0.5},
        },
        "settings": SETTINGS,
    },
    SubjectPatch: {"name": "cat", "description": "striped", **CONTROLS},
}
MESSAGE_BODY = {"message": "hello", "settings": SETTINGS}  # TurnRequest's other form
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400"]  # raw JSON tokens; Python's json accepts them all


# --- walking the request models ------------------------------------------------------------------------


def _strip(annotation: Any) -> list[Any]:
    """The concrete alternatives of an annotation (Optional/Union unpacked, Annotated unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _strip(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [alt for arg in get_args(annotation) for alt in _strip(arg)]
    return [annotation]


def leaf_paths(model: type[BaseModel], kind: type) -> list[Path_]:
    """Paths to every field of type `kind` inside `model` (lists at index 0, tuples at each index)."""

    def walk(annotation: Any, path: Path_) -> Iterator[Path_]:
        for alt in _strip(annotation):
            origin = get_origin(alt)
            if alt is kind:
                yield path
            elif isinstance(alt, type) and issubclass(alt, BaseModel):
                for name, field in alt.model_fields.items():
                    yield from walk(field.annotation, (*path, name))
            elif origin is list:
                yield from walk(get_args(alt)[0], (*path, 0))
            elif origin is tuple:
                for index, arg in enumerate(get_args(alt)):
                    yield from walk(arg, (*path, index))

    return list(walk(model, ()))


def request_models(form: bool = False) -> dict[str, type[BaseModel]]:
    """Path → body model, for every route of the app that takes a JSON body (or, with `form`, a form)."""
    models = {}
    for route in _routes():
        if route.body_field is None:
            continue
        model = route.body_field.field_info.annotation
        is_form = not getattr(route.body_field.field_info, "media_type", "application/json").endswith("json")
        if is_form == form and isinstance(model, type) and issubclass(model, BaseModel):
            models[route.path] = model
    return models


def method_of(path: str) -> str:
    """The method of the body-taking route at `path` (POST, or PATCH for a rename)."""
    (method,) = {m for r in _routes() if r.path == path and r.body_field is not None for m in r.methods}
    return method


def _routes() -> list[APIRoute]:
    from api import routes_images, routes_sessions, routes_subjects, routes_turns

    modules = (routes_sessions, routes_turns, routes_subjects, routes_images)
    return [r for m in modules for r in m.router.routes if isinstance(r, APIRoute)]


def with_raw(body: dict[str, Any], path: Path_, raw: str) -> str:
    """`body` as JSON text with the value at `path` replaced by the raw JSON token `raw`."""
    marker = f"__raw_{uuid.uuid4().hex}__"
    copy = json.loads(json.dumps(body))
    target = copy
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = marker
    return json.dumps(copy).replace(f'"{marker}"', raw)


# --- one app per database --------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Any]]:
    with ExitStack() as stack:
        overrides: dict[str, Any] = {}
        if request.param == "postgres":
            overrides["database_url"] = stack.enter_context(fresh_postgres_database())
        service, engine = make_service(tmp_path, **overrides)
        stack.callback(service.db.engine.dispose)
        with TestClient(create_app(service)) as client:
            headers = {"Authorization": f"Bearer {service.db.create_key('t')}"}
            yield client, headers, engine


def _url(path: str, client: TestClient, headers: dict[str, str]) -> str:
    if "{session_id}" not in path:
        return path
    session = client.post("/v1/sessions", json=BASE_BODIES[SessionCreate], headers=headers)
    assert session.status_code == 201, session.text
    # bodies are validated before the route looks the subject up, so any subject id does
    return path.replace("{session_id}", session.json()["id"]).replace("{subject_id}", "1")


def _names_field(response: Any, path: Path_) -> bool:
    """Whether some error of the 422 body points at `path` (or inside it) in the request body."""
    locs = [tuple(error["loc"]) for error in response.json()["detail"]]
    return any(loc[0] == "body" and loc[1 : 1 + len(path)] == path for loc in locs)


def test_the_walk_finds_the_float_and_text_fields() -> None:
    models = request_models()
    assert set(models.values()) == set(BASE_BODIES)  # a new body model needs a base body here
    floats = leaf_paths(TurnRequest, float)
    assert ("plan", "items", 0, "box", "w") in floats and ("settings", "fuse_scale", 1) in floats
    assert ("plan", "edit", "strength") in floats and ("settings", "guidance_scale") in floats
    assert ("title",) in leaf_paths(SessionCreate, str) and ("plan", "items", 0, "phrase") in leaf_paths(
        TurnRequest, str
    )


def test_every_non_finite_number_in_every_float_field_is_a_422_naming_it(backend: tuple) -> None:
    client, headers, engine = backend
    checked = 0
    for path, model in request_models().items():
        url = _url(path, client, headers)
        for field in leaf_paths(model, float):
            for raw in NON_FINITE:
                response = client.request(
                    method_of(path),
                    url,
                    content=with_raw(BASE_BODIES[model], field, raw),
                    headers={**headers, "Content-Type": "application/json"},
                )
                assert response.status_code == 422, (path, field, raw, response.text)
                assert _names_field(response, field), response.text
                assert response.json()["detail"][0]["type"] == "finite_number", response.text
                checked += 1
    assert checked >= 4 * 20
    assert engine.started == []  # nothing was queued
    sessions = client.get("/v1/sessions", headers=headers).json()
    assert all(client.get(f"/v1/sessions/{s['id']}/turns", headers=headers).json() == [] for s in sessions)


def test_every_numeric_setting_is_bounded_and_a_huge_value_is_a_422(backend: tuple) -> None:
    client, headers, _ = backend
    schema = DrawSettings.model_json_schema()
    session_url = "/v1/sessions"
    turn_url = _url("/v1/sessions/{session_id}/turns", client, headers)
    for name, prop in schema["properties"].items():
        alternatives = prop.get("anyOf", [prop])
        numbers = [a for a in alternatives if a.get("type") in ("number", "integer") or "prefixItems" in a]
        for alt in numbers:
            members = alt.get("prefixItems", [alt])
            for index, member in enumerate(members):
                assert "minimum" in member or "exclusiveMinimum" in member, (name, member)
                assert "maximum" in member, (name, member)
                huge: Any = member["maximum"] * 10 + 1
                value = huge if alt is member else [huge if i == index else 0 for i in range(len(members))]
                for url, body in (
                    (session_url, {"settings": {name: value}}),
                    (turn_url, {**MESSAGE_BODY, "settings": {name: value}}),
                ):
                    response = client.post(url, json=body, headers=headers)
                    assert response.status_code == 422, (name, value, response.text)
                    assert _names_field(response, ("settings", name)), response.text
    assert client.get(turn_url, headers=headers).json() == []


def test_a_huge_fuse_scale_cannot_reach_the_database_or_break_list_sessions(backend: tuple) -> None:
    client, headers, _ = backend
    response = client.post("/v1/sessions", json={"settings": {"fuse_scale": [1e300, 0]}}, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "settings", "fuse_scale", 0]
    assert client.get("/v1/sessions", headers=headers).json() == []


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\x1b[31m", "\x7f\x00", "\ud800"])
def test_control_characters_in_every_text_field_are_a_422_naming_it(backend: tuple, bad: str) -> None:
    client, headers, engine = backend
    for path, model in request_models().items():
        url = _url(path, client, headers)
        bases = [BASE_BODIES[model]] + ([MESSAGE_BODY] if model is TurnRequest else [])
        for base in bases:
            for field in leaf_paths(model, str):
                if field[0] not in base:
                    continue
                body_text = with_raw(base, field, json.dumps("x" + bad + "y"))
                response = client.request(
                    method_of(path), url, content=body_text, headers={**headers, "Content-Type": "application/json"}
                )
                assert response.status_code == 422, (path, field, response.text)
                assert _names_field(response, field), (field, response.text)
    for path, model in request_models(form=True).items():
        url = _url(path, client, headers)
        fields = [field for (field,) in leaf_paths(model, str)]
        assert {"name", "description"} <= set(fields)
        for field in fields if bad.isprintable() or bad.encode("utf-8", "ignore") else []:  # multipart is UTF-8
            form = {"name": "girl", field: "x" + bad + "y"}
            response = client.post(url, data=form, files={"file": ("r.png", png(8, 8), "image/png")}, headers=headers)
            assert response.status_code == 422, (form, response.text)
            assert _names_field(response, (field,)), response.text
    assert engine.started == []


def test_tab_newline_and_carriage_return_are_kept_verbatim(backend: tuple) -> None:
    client, headers, _ = backend
    title = "line one\r\n\tline two"
    response = client.post("/v1/sessions", json={"title": title}, headers=headers)
    assert response.status_code == 201, response.text
    assert client.get(f"/v1/sessions/{response.json()['id']}", headers=headers).json()["title"] == title


def _huge_plan(items: int) -> dict[str, Any]:
    entry = {"subject_id": "1", "phrase": "a girl in a red coat", "box": {"x": 1, "y": 1, "w": 9, "h": 9}}
    return {"plan": {"height": 64, "width": 64, "items": [dict(entry, subject_id=str(i + 1)) for i in range(items)]}}


def test_a_long_plan_within_the_body_limit_is_refused_at_the_length_check(client: TestClient, keys: dict) -> None:
    url = _url("/v1/sessions/{session_id}/turns", client, keys["a"])
    body = json.dumps(_huge_plan(2000))
    assert 150_000 < len(body) < MAX_JSON_BODY_BYTES
    response = client.post(url, content=body, headers={**keys["a"], "Content-Type": "application/json"})
    assert response.status_code == 422
    (error,) = response.json()["detail"]  # one error: the per-item checks never ran on the rest
    assert error == {"loc": ["body", "plan", "items"], "msg": error["msg"], "type": "too_long"}


def test_the_655_kb_plan_of_8000_items_is_a_413_before_decoding(
    client: TestClient, keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url("/v1/sessions/{session_id}/turns", client, keys["a"])
    body = json.dumps(_huge_plan(8000), separators=(",", ":"))
    assert 600_000 < len(body) < 700_000  # the size of the plan that stalled /healthz for seconds
    decoded: list[int] = []
    real_loads = json.loads
    monkeypatch.setattr(json, "loads", lambda data, *a, **k: decoded.append(len(data)) or real_loads(data, *a, **k))
    response = client.post(url, content=body, headers={**keys["a"], "Content-Type": "application/json"})
    assert response.status_code == 413 and response.text == "Content Too Large"  # Starlette's body limit
    assert decoded == []


def test_healthz_answers_while_big_bodies_are_posted(client: TestClient, keys: dict) -> None:
    url = _url("/v1/sessions/{session_id}/turns", client, keys["a"])
    body = json.dumps(_huge_plan(2000))
    statuses: list[int] = []
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            statuses.append(
                client.post(url, content=body, headers={**keys["a"], "Content-Type": "application/json"}).status_code
            )

    threads = [threading.Thread(target=flood) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        health = [client.get("/healthz").status_code for _ in range(20)]
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert health == [200] * 20
    assert statuses and set(statuses) == {422}


def test_the_largest_valid_turn_fits_the_body_limit_even_fully_escaped(client: TestClient, keys: dict) -> None:
    """Every text field at its maximum length, every character non-ASCII (six bytes as a \\u escape)."""
    long = "é" * 1000
    box = {"x": 0.123456789, "y": 0.123456789, "w": 10.123456789, "h": 10.123456789}
    items = [{"subject_id": str(i + 1), "phrase": long[:300], "name": long[:100], "box": box} for i in range(64)]
    plan = {
        "height": 512,
        "width": 512,
        "caption": long * 2,
        "background": long[:500],
        "negative": long,
        "items": items,
    }
    plan["edit"] = {"regenerate_subject_ids": [str(i + 1) for i in range(64)], "regenerate_boxes": [box] * 64}
    body = json.dumps({"plan": plan, "settings": SETTINGS}, ensure_ascii=True, indent=1)
    assert TurnRequest.model_validate_json(body).plan is not None
    url = _url("/v1/sessions/{session_id}/turns", client, keys["a"])
    response = client.post(url, content=body, headers={**keys["a"], "Content-Type": "application/json"})
    assert response.status_code == 422 and "at most 8 subjects" in response.text  # the service's limit, not 413


def test_every_number_of_every_request_model_has_both_bounds_in_the_spec() -> None:
    """Walks the OpenAPI components of the request bodies: a number without a minimum and a maximum fails."""
    unbounded: list[str] = []
    numbers: list[str] = []

    def visit(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("number", "integer"):
                numbers.append(where)
                has_min = "minimum" in node or "exclusiveMinimum" in node
                has_max = "maximum" in node or "exclusiveMaximum" in node
                if not (has_min and has_max):
                    unbounded.append(where)
            for key, value in node.items():
                visit(value, f"{where}.{key}" if key not in ("anyOf", "prefixItems", "items", "properties") else where)
        elif isinstance(node, list):
            for value in node:
                visit(value, where)

    for model in BASE_BODIES:
        visit(model.model_json_schema(), model.__name__)
    assert unbounded == [] and len(numbers) >= 25
