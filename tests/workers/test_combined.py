"""Issue 12's combined failure test: 2 API processes (real subprocesses, tests/scaleout) and 2 `studio worker`
processes (tests/workers) on the real PostgreSQL and Redis, the real offline planner (default graph engine, no LLM),
10 sessions x 3 turns posted to both API processes at random. Skipped without PostgreSQL or Redis, except under CI."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from entrypoints.runtime import build_service
from studio.draw import DrawSettings
from studio.settings import DrawerBackendSettings, Settings
from studio.storage.database import Database
from studio.turns import Turn, TurnEvent, TurnRequest, TurnStatus
from tests.agents.fakes import FakeDrawer
from tests.scaleout.conftest import ApiProcess, all_finished, wait_until
from tests.workers.conftest import Workers, finished_turn, settings_env

DIALOGUE = ["a girl and a boy walk to school", "the boy waves goodbye", "she now wears a red hat"]
SESSIONS = 10
CANVAS = {"height": 64, "width": 64, "settings": {"steps": 2, "seed": 7}}


def subject_ids(turn: Turn) -> list[str]:
    assert turn.plan is not None, turn.error
    return sorted(item.subject_id for item in turn.plan.items)


def embedded_subject_ids(data_dir: Path) -> list[list[str]]:
    """The dialogue in one embedded process on SQLite with the same planner: the subject ids of each turn."""
    settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'studio.db'}")
    service = build_service(settings, drawer=FakeDrawer())
    service.start()
    try:
        session = service.create_session("t", "reference", 64, 64, DrawSettings(steps=2, seed=7))
        result = []
        for message in DIALOGUE:
            turn = service.submit_turn(session, TurnRequest(message=message))
            result.append(subject_ids(finished_turn(service, session.id, turn.index)))
        return result
    finally:
        service.close(wait=True)


@pytest.fixture
def apis(pg_url: str, pool_settings: DrawerBackendSettings, tmp_path: Path) -> Iterator[list[ApiProcess]]:
    db = Database(pg_url)
    db.migrate()
    db.engine.dispose()
    env = settings_env(pool_settings, SCALEOUT_CHILD_ENGINE="studio")
    started = [ApiProcess(tmp_path / "shared", pg_url, 10.0, tmp_path / f"api-{k}.log", env=env) for k in range(2)]
    try:
        for api in started:
            api.wait_ready()
        yield started
    finally:
        for api in started:
            api.stop()


def test_two_apis_and_two_workers_draw_every_turn_once_in_order(
    apis: list[ApiProcess], workers: Workers, pg_url: str, tmp_path: Path
) -> None:
    expected = embedded_subject_ids(tmp_path / "embedded")
    assert any(len(ids) >= 2 for ids in expected)  # the dialogue names several subjects
    workers.start()
    workers.start()
    session_ids = []
    for _ in range(SESSIONS):
        response = httpx.post(f"{apis[0].url}/v1/sessions", json=CANVAS)
        assert response.status_code == 201, response.text
        session_ids.append(response.json()["id"])

    def post_dialogue(session_id: str, seed: int) -> None:
        rng = random.Random(seed)
        for message in DIALOGUE:
            api = rng.choice(apis)
            response = httpx.post(f"{api.url}/v1/sessions/{session_id}/turns", json={"message": message}, timeout=30)
            assert response.status_code == 202, response.text

    with ThreadPoolExecutor(max_workers=SESSIONS) as pool:
        list(pool.map(post_dialogue, session_ids, range(SESSIONS)))

    db = Database(pg_url)
    try:
        for session_id in session_ids:
            wait_until(lambda s=session_id: all_finished(apis[1], s, len(DIALOGUE)), f"session {session_id}")
            turns = db.list_turns(session_id)
            assert [t.status for t in turns] == [TurnStatus.DONE] * len(DIALOGUE), [t.error for t in turns]
            assert all(t.image_id is not None for t in turns)
            assert [subject_ids(t) for t in turns] == expected

            def events(s: str = session_id) -> list[TurnEvent]:
                found = db.events_after(s, 0)
                return found if sum(e.type == "done" for e in found) >= len(DIALOGUE) else []

            stored = wait_until(events, "the done events")  # stored just after each turn's record
            indices = [t.index for t in turns]
            assert [e.turn_index for e in stored if e.type == "done"] == indices  # one done per turn
            assert [e.turn_index for e in stored if e.type == "planning"] == indices  # each started once, in order
    finally:
        db.engine.dispose()
