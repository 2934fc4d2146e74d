"""Branching a session at a past turn: POST /v1/sessions/{id}/turns/{n}/branch, on SQLite and PostgreSQL.

The scripted engine (tests/api/conftest.py) pins the records: shared turns, the memory snapshot, shared image
files, what a delete keeps, the refusals. The real offline GraphEngine pins the checkpoint copy: the branch's
graph state right after branching is the parent's state after the branch turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from api.app import create_app
from api.client import ConflictError, NotFoundError, StudioClient, TurnFailedError
from entrypoints.runtime import build_service
from entrypoints.server import BackgroundServer, free_port
from studio.draw import DrawSettings
from studio.protocols import TurnContext
from studio.service import TurnService
from studio.settings import Settings
from studio.storage import schema
from studio.turns import TurnRequest, TurnStatus
from tests.agents.fakes import FakeDrawer
from tests.api.conftest import ScriptedEngine, make_service, wait_for_turn
from tests.postgres import fresh_postgres_database, require_postgres


def plan(*subjects: str) -> dict[str, Any]:
    """An explicit plan placing these subjects ("1": "a girl", …): each turn adds one to the memory."""
    phrases = {"1": "a girl", "2": "a dog", "3": "a kite"}
    return {
        "height": 64,
        "width": 64,
        "background": "a park",
        "items": [
            {"subject_id": s, "phrase": phrases[s], "box": {"x": 4 * i, "y": 4 * i, "w": 24, "h": 24}}
            for i, s in enumerate(subjects)
        ],
    }


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    with fresh_postgres_database() as url:
        require_postgres(url)
        yield url


@pytest.fixture
def api(tmp_path: Path, database_url: str | None) -> Iterator[tuple[TestClient, TurnService, ScriptedEngine, dict]]:
    overrides = {"database_url": database_url} if database_url else {}
    service, engine = make_service(tmp_path, **overrides)
    keys = {
        "a": {"Authorization": f"Bearer {service.db.create_key('tenant-a')}"},
        "b": {"Authorization": f"Bearer {service.db.create_key('tenant-b')}"},
    }
    with TestClient(create_app(service)) as client:
        yield client, service, engine, keys
    engine.hold.set()
    service.db.engine.dispose()


def three_turns(client: TestClient, headers: dict) -> tuple[dict, list[dict]]:
    session = client.post("/v1/sessions", json={"title": "story", "height": 64, "width": 64}, headers=headers).json()
    turns = []
    for index, subjects in enumerate((("1",), ("1", "2"), ("1", "2", "3")), start=1):
        client.post(f"/v1/sessions/{session['id']}/turns", json={"plan": plan(*subjects)}, headers=headers)
        turns.append(wait_for_turn(client, headers, session["id"], index))
        assert turns[-1]["status"] == "done"
    return session, turns


def image_files(service: TurnService) -> set[str]:
    return {path.name for path in service.images.root.rglob("*") if path.is_file()}


def test_a_branch_shares_turns_images_and_the_memory_after_its_turn(api: tuple) -> None:
    client, service, engine, keys = api
    parent, turns = three_turns(client, keys["a"])
    with service.db.tx() as conn:
        snapshots = dict(
            conn.execute(
                select(schema.turns.c.idx, schema.turns.c.memory).where(schema.turns.c.session_id == parent["id"])
            ).all()
        )
    files_before = image_files(service)

    response = client.post(f"/v1/sessions/{parent['id']}/turns/2/branch", headers=keys["a"])

    assert response.status_code == 201
    branch = response.json()
    assert branch["parent_id"] == parent["id"] and branch["branch_turn"] == 2
    assert branch["title"] == "story (branch at turn 2)"
    assert (branch["height"], branch["width"], branch["settings"]) == (64, 64, parent["settings"])
    assert branch["turn_count"] == 2
    assert engine.branched == [(parent["id"], 2, branch["id"])]
    # the memory is the one after turn 2 (subjects 1 and 2), not the parent's current one (1, 2, 3)
    subjects = client.get(f"/v1/sessions/{branch['id']}/subjects", headers=keys["a"]).json()
    assert [s["id"] for s in subjects] == ["1", "2"]
    assert [s["id"] for s in client.get(f"/v1/sessions/{parent['id']}/subjects", headers=keys["a"]).json()] == [
        "1",
        "2",
        "3",
    ]
    assert [[s["id"] for s in snapshots[i]] for i in (1, 2, 3)] == [["1"], ["1", "2"], ["1", "2", "3"]]
    assert subjects == [{**s, "reference_url": subjects[i]["reference_url"]} for i, s in enumerate(snapshots[2])]
    # turns 1..2 are visible in the branch with the same images; no file was copied
    shared = client.get(f"/v1/sessions/{branch['id']}/turns", headers=keys["a"]).json()
    assert [(t["index"], t["image_id"], t["plan"]) for t in shared] == [
        (t["index"], t["image_id"], t["plan"]) for t in turns[:2]
    ]
    assert {t["id"] for t in shared}.isdisjoint({t["id"] for t in turns})
    assert image_files(service) == files_before
    listed = {s["id"]: s for s in client.get("/v1/sessions", headers=keys["a"]).json()}
    assert (listed[branch["id"]]["parent_id"], listed[branch["id"]]["branch_turn"]) == (parent["id"], 2)
    assert (listed[parent["id"]]["parent_id"], listed[parent["id"]]["branch_turn"]) == (None, None)


def test_the_branchs_next_turn_continues_from_the_branch_turn(api: tuple) -> None:
    client, _, engine, keys = api
    parent, turns = three_turns(client, keys["a"])
    branch = client.post(
        f"/v1/sessions/{parent['id']}/turns/2/branch", json={"title": "the kite never came"}, headers=keys["a"]
    ).json()
    assert branch["title"] == "the kite never came"
    contexts: list[TurnContext] = []
    run_turn = engine.run_turn

    def recording(ctx: TurnContext, *args: Any, **kwargs: Any) -> Any:
        contexts.append(ctx)
        return run_turn(ctx, *args, **kwargs)

    engine.run_turn = recording  # type: ignore[method-assign]
    response = client.post(f"/v1/sessions/{branch['id']}/turns", json={"message": "they rest"}, headers=keys["a"])

    assert response.json()["index"] == 3
    assert wait_for_turn(client, keys["a"], branch["id"], 3)["status"] == "done"
    (ctx,) = contexts
    assert ctx.session_id == branch["id"] and ctx.turn_index == 3
    assert [h.turn_index for h in ctx.history] == [1, 2]
    assert [h.plan.model_dump(mode="json") for h in ctx.history] == [t["plan"] for t in turns[:2]]
    assert [s.id for s in ctx.subjects] == ["1", "2"]
    assert ctx.previous_image_id == turns[1]["image_id"]


def test_deleting_either_session_keeps_what_the_other_uses(api: tuple) -> None:
    client, service, _, keys = api
    parent, turns = three_turns(client, keys["a"])
    shared_urls = [t["image_url"] for t in turns[:2]]
    only_parent = turns[2]["image_id"]

    # the branch goes first: every image stays, the parent still uses them all
    second = client.post(f"/v1/sessions/{parent['id']}/turns/2/branch", headers=keys["a"]).json()
    assert client.delete(f"/v1/sessions/{second['id']}", headers=keys["a"]).status_code == 204
    for turn in turns:
        assert client.get(turn["image_url"], headers=keys["a"]).status_code == 200

    # then the parent: the branch's turns, and its subjects' references, stay readable
    branch = client.post(f"/v1/sessions/{parent['id']}/turns/2/branch", headers=keys["a"]).json()
    assert client.delete(f"/v1/sessions/{parent['id']}", headers=keys["a"]).status_code == 204
    for url in shared_urls:
        assert client.get(url, headers=keys["a"]).status_code == 200
    for subject in client.get(f"/v1/sessions/{branch['id']}/subjects", headers=keys["a"]).json():
        assert client.get(subject["reference_url"], headers=keys["a"]).status_code == 200
    # turn 3's image was the parent's alone: its file is gone
    assert only_parent not in image_files(service)


def test_only_a_done_turn_of_ones_own_session_is_a_branch_point(api: tuple) -> None:
    client, service, engine, keys = api
    session = client.post("/v1/sessions", json={"height": 64, "width": 64}, headers=keys["a"]).json()
    base = f"/v1/sessions/{session['id']}"
    client.post(f"{base}/turns", json={"message": "fail please"}, headers=keys["a"])
    assert wait_for_turn(client, keys["a"], session["id"], 1)["status"] == "failed"
    engine.hold.clear()
    client.post(f"{base}/turns", json={"plan": plan("1")}, headers=keys["a"])

    failed = client.post(f"{base}/turns/1/branch", headers=keys["a"])
    unfinished = client.post(f"{base}/turns/2/branch", headers=keys["a"])
    missing = client.post(f"{base}/turns/9/branch", headers=keys["a"])
    engine.hold.set()
    assert wait_for_turn(client, keys["a"], session["id"], 2)["status"] == "done"
    other_tenant = client.post(f"{base}/turns/2/branch", headers=keys["b"])

    assert (failed.status_code, unfinished.status_code) == (409, 409)
    assert "failed" in failed.json()["detail"] and "only a done turn" in unfinished.json()["detail"]
    assert missing.status_code == 404
    assert other_tenant.status_code == 404
    assert [s.id for s in service.db.list_sessions("tenant-a")] == [session["id"]]  # nothing was created
    assert client.post(f"{base}/turns/2/branch", headers=keys["a"]).status_code == 201


def test_turns_finished_before_memory_snapshots_branch_only_at_the_last_done_turn(api: tuple) -> None:
    client, service, _, keys = api
    parent, _ = three_turns(client, keys["a"])
    with service.db.tx() as conn:  # as revision 0004 leaves the turns it finds
        conn.execute(update(schema.turns).where(schema.turns.c.session_id == parent["id"]).values(memory=None))

    earlier = client.post(f"/v1/sessions/{parent['id']}/turns/2/branch", headers=keys["a"])
    last = client.post(f"/v1/sessions/{parent['id']}/turns/3/branch", headers=keys["a"])

    assert earlier.status_code == 409 and "snapshot" in earlier.json()["detail"]
    assert last.status_code == 201
    subjects = client.get(f"/v1/sessions/{last.json()['id']}/subjects", headers=keys["a"]).json()
    assert [s["id"] for s in subjects] == ["1", "2", "3"]


def test_branch_at_zero_is_a_fresh_session_with_the_same_settings(api: tuple) -> None:
    client, _, engine, keys = api
    settings = DrawSettings(steps=3, seed=5).model_dump(mode="json")
    body = {"title": "t", "height": 64, "width": 64, "settings": settings}
    session = client.post("/v1/sessions", json=body, headers=keys["a"]).json()
    client.post(f"/v1/sessions/{session['id']}/turns", json={"plan": plan("1")}, headers=keys["a"])
    wait_for_turn(client, keys["a"], session["id"], 1)

    fresh = client.post(f"/v1/sessions/{session['id']}/turns/0/branch", headers=keys["a"]).json()

    assert (fresh["branch_turn"], fresh["turn_count"], fresh["settings"]) == (0, 0, session["settings"])
    assert client.get(f"/v1/sessions/{fresh['id']}/subjects", headers=keys["a"]).json() == []
    assert engine.branched == []  # nothing of the conversation to carry


def test_sdk_branch_and_redo(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path, port=free_port())
    key = service.db.create_key("sdk")
    with BackgroundServer(service.settings, app=create_app(service)) as server, StudioClient(server.url, key) as sdk:
        session = sdk.create_session(title="s", height=64, width=64)
        for subjects in (("1",), ("1", "2"), ("1", "2", "3")):
            sdk.draw_plan(session.id, plan(*subjects))

        branch = sdk.branch(session.id, 2, title="b")
        redone = sdk.wait(sdk.redo(session.id, 3, plan=plan("1", "2")))
        first = sdk.redo(session.id, 1, message="fail at a new start")
        with pytest.raises(TurnFailedError):
            sdk.wait(first)

        assert (branch.parent_id, branch.branch_turn, branch.title) == (session.id, 2, "b")
        grandchild = sdk.branch(branch.id, 1)  # a branch of a branch: the copied turns keep their snapshots
        assert [s.id for s in sdk.list_subjects(grandchild.id)] == ["1"]
        assert (grandchild.parent_id, grandchild.title) == (branch.id, "b (branch at turn 1)")
        redo_session = sdk.get_session(redone.session_id)
        assert (redo_session.parent_id, redo_session.branch_turn, redone.index) == (session.id, 2, 3)
        assert [t.index for t in sdk.list_turns(redone.session_id)] == [1, 2, 3]
        assert redone.status == "done" and redone.plan.subject_ids == ["1", "2"]
        assert (sdk.get_session(first.session_id).branch_turn, first.index) == (0, 1)
        with pytest.raises(ConflictError):
            sdk.branch(first.session_id, 1)  # failed, not done
        with pytest.raises(NotFoundError):
            sdk.branch(session.id, 7)


# --- the real offline GraphEngine: checkpoint time travel -------------------------------------------------------


@pytest.fixture
def graph_service(tmp_path: Path, database_url: str | None) -> Iterator[TurnService]:
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    service = build_service(settings, drawer=FakeDrawer())
    yield service
    service.close()
    service.engine.close()  # type: ignore[attr-defined]
    service.db.engine.dispose()


def run(service: TurnService, session_id: str, message: str) -> None:
    session = service.db.get_session(session_id)
    assert session is not None
    turn = service.submit_turn(session, TurnRequest(message=message, settings=DrawSettings(steps=2, seed=1)))
    for _ in range(2000):
        current = service.db.get_turn(session_id, turn.index)
        if current is not None and current.status.finished:
            assert current.status == TurnStatus.DONE, current.error
            return
        time.sleep(0.01)
    raise AssertionError("turn did not finish")


def test_the_branch_continues_from_the_parents_checkpoint_of_its_turn(graph_service: TurnService) -> None:
    service, engine = graph_service, graph_service.engine
    parent = service.create_session("tenant", "story", 256, 256, DrawSettings(steps=2, seed=1))
    run(service, parent.id, "A knight walks through a forest.")
    run(service, parent.id, "A dragon lands next to the knight.")
    after_two = engine.state(parent.id)  # type: ignore[attr-defined]
    run(service, parent.id, "A princess arrives on a horse.")

    branch = service.branch_session(parent, 2)

    assert engine.state(branch.id) == after_two  # type: ignore[attr-defined]
    assert engine.state(parent.id)["turn_index"] == 3  # type: ignore[attr-defined]
    run(service, branch.id, "The dragon flies away.")
    state = engine.state(branch.id)  # type: ignore[attr-defined]
    assert (state["session_id"], state["turn_index"], state["done"]) == (branch.id, 3, True)
    assert [m["content"] for m in state["messages"] if m["role"] == "user"] == [
        "A knight walks through a forest.",
        "A dragon lands next to the knight.",
        "The dragon flies away.",
    ]
    # the parent's thread is untouched, and deleting the parent leaves the branch's checkpoints
    service.delete_session(parent)
    assert engine.state(parent.id) == {}  # type: ignore[attr-defined]
    assert engine.state(branch.id)["turn_index"] == 3  # type: ignore[attr-defined]
