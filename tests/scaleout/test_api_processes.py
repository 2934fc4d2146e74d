"""Several API processes (real child processes) on one PostgreSQL database: each turn is driven by one process,
events are numbered by the database and streamed by every process, a dead process's turn is finished by
another one, and a cancel works from any process."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from studio.storage.database import Database
from tests.scaleout.conftest import (
    EventReader,
    all_finished,
    done_count,
    draws,
    new_session,
    post_turn,
    wait_until,
)


def stored_events(database_url: str, session_id: str) -> list[dict]:
    db = Database(database_url)
    try:
        return [e.model_dump(mode="json") for e in db.events_after(session_id, 0)]
    finally:
        db.engine.dispose()


def test_two_processes_draw_each_turn_once_and_both_stream_every_event(
    start_api, migrated_postgres_url: str, tmp_path: Path
) -> None:
    a, b = start_api(2)
    session_id = new_session(a)
    readers = [EventReader(api, session_id, lambda events: done_count(events, 3) == 1) for api in (a, b)]
    for reader in readers:
        reader.start()
        reader.connected.wait()
    for index, api in enumerate((a, b, a), start=1):
        assert post_turn(api, session_id, f"turn {index}")["index"] == index
    turns = wait_until(lambda: all_finished(b, session_id, 3), "three turns finished")
    assert [t["status"] for t in turns] == ["done"] * 3

    stored = stored_events(migrated_postgres_url, session_id)
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))  # contiguous, unique, from 1
    assert [done_count(stored, index) for index in (1, 2, 3)] == [1, 1, 1]
    finished = [(d["index"], d["pid"]) for d in draws(tmp_path) if d["what"] == "finish"]
    assert sorted(index for index, _ in finished) == [1, 2, 3]  # each turn drawn once
    assert {pid for _, pid in finished} <= {a.pid, b.pid}
    # each stream shows every stored event, including those of the turns the other process drove
    for reader in readers:
        seen = reader.result()
        assert [(e["seq"], e["type"]) for e in seen] == [(e["seq"], e["type"]) for e in stored]


def test_a_turn_of_a_killed_process_is_finished_by_the_other(
    start_api, migrated_postgres_url: str, tmp_path: Path
) -> None:
    (tmp_path / "hold").touch()
    a, b = start_api(2, lease_seconds=1.5)
    session_id = new_session(a)
    post_turn(a, session_id, "hold this one")
    driver_pid = wait_until(lambda: [d["pid"] for d in draws(tmp_path) if d["what"] == "start"], "turn started")[0]
    driver, other = (a, b) if driver_pid == a.pid else (b, a)
    reader = EventReader(other, session_id, lambda events: done_count(events, 1) == 1)
    reader.start()
    reader.connected.wait()

    driver.kill()
    (tmp_path / "hold").unlink()
    turns = wait_until(lambda: all_finished(other, session_id, 1), "turn finished by the other process")
    assert turns[0]["status"] == "done"

    assert done_count(reader.result(), 1) == 1  # the stream on the surviving process saw it finish
    assert done_count(stored_events(migrated_postgres_url, session_id), 1) == 1
    log = [(d["what"], d["pid"]) for d in draws(tmp_path)]
    assert log == [("start", driver.pid), ("start", other.pid), ("finish", other.pid)]


def test_a_cancel_sent_to_the_process_not_driving_the_turn_stops_it(start_api, tmp_path: Path) -> None:
    (tmp_path / "hold").touch()
    a, b = start_api(2)
    session_id = new_session(a)
    post_turn(a, session_id, "hold this one")
    driver_pid = wait_until(lambda: [d["pid"] for d in draws(tmp_path) if d["what"] == "start"], "turn started")[0]
    driver, other = (a, b) if driver_pid == a.pid else (b, a)
    assert "studio_turns_driven 1.0" in httpx.get(f"{driver.url}/metrics").text
    assert "studio_turns_driven 0.0" in httpx.get(f"{other.url}/metrics").text

    response = httpx.post(f"{other.url}/v1/sessions/{session_id}/turns/1/cancel")
    assert response.status_code == 202, response.text
    turns = wait_until(lambda: all_finished(other, session_id, 1), "cancelled turn finished")
    assert (turns[0]["status"], turns[0]["error"]) == ("failed", "cancelled")
    assert (tmp_path / "hold").exists()  # the turn was stopped, not let go
    assert [d["what"] for d in draws(tmp_path)] == ["start"]
    assert "studio_turns_driven 0.0" in httpx.get(f"{driver.url}/metrics").text


def test_thirty_turns_posted_at_random_to_two_processes_run_once_each_in_order(
    start_api, migrated_postgres_url: str, tmp_path: Path
) -> None:
    apis = start_api(2)
    rng = random.Random(12)
    sessions = [new_session(rng.choice(apis)) for _ in range(10)]
    targets = {session_id: [rng.choice(apis) for _ in range(3)] for session_id in sessions}

    def post_three(session_id: str) -> None:  # a session's turns in order, all sessions at once
        for api in targets[session_id]:
            post_turn(api, session_id, "a girl, pause")

    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(post_three, sessions))
    for session_id in sessions:
        turns = wait_until(lambda s=session_id: all_finished(apis[0], s, 3), f"session {session_id} finished")
        assert [t["status"] for t in turns] == ["done"] * 3

    log = draws(tmp_path)
    for session_id in sessions:
        mine = [(d["what"], d["index"]) for d in log if d["session"] == session_id]
        # each turn drawn once, and a turn starts only after the previous one finished, whichever process
        assert mine == [("start", 1), ("finish", 1), ("start", 2), ("finish", 2), ("start", 3), ("finish", 3)]
        stored = stored_events(migrated_postgres_url, session_id)
        assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
        assert [done_count(stored, index) for index in (1, 2, 3)] == [1, 1, 1]
