"""Turn leases in the database and in the service, on SQLite and PostgreSQL: one owner drives a session's
next turn at a time, an expired lease is taken over, and a process that lost its lease records nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from studio.draw import DrawSettings
from studio.service import TurnService
from studio.settings import Settings
from studio.storage import schema
from studio.storage.database import Database, now
from studio.storage.images import FileImageStore
from studio.turns import TurnRequest, TurnStatus
from tests.api.conftest import ScriptedEngine

LEASE = 60.0


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.engine.dispose()


def expire_leases(db: Database, session_id: str) -> None:
    """What the passing of time does to the leases of a process that died."""
    with db.tx() as conn:
        conn.execute(
            update(schema.turns).where(schema.turns.c.session_id == session_id).values(lease_expires_at=now())
        )


def session_with_turns(db: Database, count: int) -> str:
    session = db.create_session("t", "", 64, 64, DrawSettings())
    for k in range(count):
        db.create_turn(session.id, TurnRequest(message=f"turn {k + 1}"), None)
    return session.id


def test_one_owner_at_a_time_takes_a_sessions_next_turn(db: Database) -> None:
    session_id = session_with_turns(db, 2)
    first = db.claim_next_turn(session_id, "a", LEASE)
    assert first is not None and first.index == 1
    assert db.claim_next_turn(session_id, "b", LEASE) is None  # a holds the session
    assert db.claimable_sessions() == []
    assert db.set_turn_status(first.id, TurnStatus.DONE, owner="a")  # finishing ends the lease
    assert db.claimable_sessions() == [session_id]
    second = db.claim_next_turn(session_id, "b", LEASE)
    assert second is not None and second.index == 2
    assert db.claim_next_turn(session_id, "a", LEASE) is None
    assert db.set_turn_status(second.id, TurnStatus.DONE, owner="b")
    assert db.claim_next_turn(session_id, "a", LEASE) is None  # nothing left


def test_an_expired_lease_is_taken_over_and_the_old_owner_records_nothing(db: Database) -> None:
    session_id = session_with_turns(db, 1)
    turn = db.claim_next_turn(session_id, "dead", LEASE)
    assert turn is not None
    expire_leases(db, session_id)
    assert db.claimable_sessions() == [session_id]
    taken = db.claim_next_turn(session_id, "alive", LEASE)
    assert taken is not None and taken.id == turn.id
    assert db.renew_leases("dead", [turn.id], LEASE) == set()
    assert db.renew_leases("alive", [turn.id], LEASE) == {turn.id}
    assert not db.set_turn_status(turn.id, TurnStatus.FAILED, owner="dead", error="late")
    assert db.get_turn(session_id, 1).status == TurnStatus.QUEUED
    db.release_lease(turn.id, "alive")  # a graceful shutdown lets the next process take it at once
    assert db.claimable_sessions() == [session_id]


def make_service(tmp_path: Path, database_url: str, cancel_poll_seconds: float) -> tuple[TurnService, ScriptedEngine]:
    settings = Settings(data_dir=tmp_path, database_url=database_url, worker_threads=2)
    db = Database(database_url)
    images = FileImageStore(tmp_path / "images")
    engine = ScriptedEngine(images)
    return TurnService(settings, db, images, engine, cancel_poll_seconds=cancel_poll_seconds), engine


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.01)


def test_a_cancel_stored_by_another_process_is_seen_before_the_next_stage(tmp_path: Path, database_url: str) -> None:
    service, engine = make_service(tmp_path, database_url, cancel_poll_seconds=3600)  # the step poll never fires
    engine.hold.clear()
    session = service.db.create_session("t", "", 64, 64, DrawSettings())
    service.submit_turn(session, TurnRequest(message="a girl"))
    wait_for(lambda: engine.started, "turn started")
    turn = service.db.get_turn(session.id, 1)
    assert service.db.request_cancel(turn.id)  # what a cancel sent to another process stores
    engine.hold.set()
    wait_for(lambda: service.db.get_turn(session.id, 1).status.finished, "turn finished")
    finished = service.db.get_turn(session.id, 1)
    assert (finished.status, finished.error) == (TurnStatus.FAILED, "cancelled")
    assert engine.finished == []
    service.close()


def test_a_process_that_lost_its_lease_stops_and_leaves_the_turn_to_the_new_owner(
    tmp_path: Path, database_url: str
) -> None:
    service, engine = make_service(tmp_path, database_url, cancel_poll_seconds=0)
    engine.hold.clear()
    session = service.db.create_session("t", "", 64, 64, DrawSettings())
    service.submit_turn(session, TurnRequest(message="a girl"))
    wait_for(lambda: engine.started, "turn started")
    expire_leases(service.db, session.id)  # this process stalled past its lease …
    assert service.db.claim_next_turn(session.id, "other", LEASE) is not None  # … and another took the turn
    service._renew_leases()  # the heartbeat finds the lease gone and stops the turn here
    wait_for(lambda: not service._running, "turn stopped")
    turn = service.db.get_turn(session.id, 1)
    assert turn.status == TurnStatus.QUEUED and turn.error is None
    assert [e.type for e in service.db.events_after(session.id, 0)] == ["queued"]
    assert service.db.renew_leases("other", [turn.id], LEASE) == {turn.id}
    service.close()
