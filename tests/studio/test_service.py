"""The turn service's own mechanisms with a scripted engine: durable cancel, delete means delete, fair
scheduling across sessions, the atomic queue cap and idempotency, on SQLite and (where it matters) on the
real PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from studio.draw import DrawSettings
from studio.service import IdempotencyKeyReused, QueueFull, TurnService
from studio.storage.database import Database
from studio.turns import Session, Turn, TurnRequest, TurnStatus
from tests.api.conftest import ScriptedEngine, make_service, png


def wait_until(condition: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def finished(service: TurnService, session: Session, index: int) -> Turn:
    wait_until(lambda: (t := service.db.get_turn(session.id, index)) is not None and t.status.finished)
    turn = service.db.get_turn(session.id, index)
    assert turn is not None
    return turn


def image_files(tmp_path: Path) -> set[str]:
    return {path.stem for path in (tmp_path / "images").rglob("*.png")}


def new_session(service: TurnService, title: str = "") -> Session:
    return service.db.create_session("t", title, 64, 96, DrawSettings())


def held_turn(tmp_path: Path, **overrides: object) -> tuple[TurnService, ScriptedEngine, Session, Turn]:
    """A service whose engine has started a turn and holds it (like a long draw) until `engine.hold` is set."""
    service, engine = make_service(tmp_path, **overrides)
    engine.hold.clear()
    session = new_session(service)
    turn = service.submit_turn(session, TurnRequest(message="a girl"))
    wait_until(lambda: engine.started)
    return service, engine, session, turn


# --- durable cancel -----------------------------------------------------------------------------------


def test_a_cancel_survives_a_restart_and_the_turn_never_runs_again(tmp_path: Path) -> None:
    # the process running the turn reads the stored flag only once an hour: it will not act on the cancel
    first, _, session, turn = held_turn(tmp_path, cancel_poll_seconds=3600)
    # another API process answers the cancel (202), then the running process is stopped (SIGTERM)
    api_process, _ = make_service(tmp_path)
    assert api_process.cancel_turn(turn)
    first.close()
    assert not first.db.get_turn(session.id, 1).status.finished  # stopped, not acted on
    api_process.close()

    restarted, engine_after = make_service(tmp_path)
    restarted.start()
    ended = finished(restarted, session, 1)
    assert (ended.status, ended.error) == (TurnStatus.FAILED, "cancelled")
    assert engine_after.started == []  # never planned or drawn again
    restarted.close()


def test_a_cancel_stored_by_another_process_stops_the_running_turn(tmp_path: Path) -> None:
    service, engine, session, turn = held_turn(tmp_path)
    assert Database(service.db.url).request_cancel(turn.id)  # another process, between two steps
    ended = finished(service, session, 1)
    assert (ended.status, ended.error) == (TurnStatus.FAILED, "cancelled") and engine.finished == []
    assert not service.cancel_turn(ended)  # a finished turn cannot be cancelled
    engine.hold.set()
    service.close()


# --- delete means delete -------------------------------------------------------------------------------


def test_delete_removes_the_sessions_files_events_and_checkpoints_but_not_shared_images(tmp_path: Path) -> None:
    service, engine = make_service(tmp_path)
    mine, other = new_session(service, "mine"), new_session(service, "other")
    shared = png(16, 16, (1, 2, 3))
    reference = service.upload_reference(mine, "girl", shared)
    assert service.upload_reference(other, "girl", shared).reference_image_id == reference.reference_image_id
    for session in (mine, other):
        service.submit_turn(session, TurnRequest(message="a girl"))
        assert finished(service, session, 1).status == TurnStatus.DONE
    kept = {image for image in image_files(tmp_path) if service.db.image_visible_to(image, "t")}
    done = service.db.get_turn(mine.id, 1)
    own = {done.image_id, *(crop.crop_image_id for crop in done.crops)}
    assert own <= kept and reference.reference_image_id in kept

    service.delete_session(mine)
    assert image_files(tmp_path) == kept - own  # the shared reference and the other session's files stay
    assert reference.reference_image_id in image_files(tmp_path)
    assert service.db.events_after(mine.id, 0) == [] and service.db.events_after(other.id, 0) != []
    assert engine.forgotten == [mine.id]
    service.close()


def test_deleting_a_session_with_a_running_turn_leaves_the_worker_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, engine, doomed, _ = held_turn(tmp_path, worker_threads=1)
    other = new_session(service)
    with caplog.at_level(logging.WARNING):
        service.delete_session(doomed)
        service.submit_turn(other, TurnRequest(message="a boy"))
        engine.hold.set()
        assert finished(service, other, 1).status == TurnStatus.DONE
    assert [s for s, _, _ in engine.finished] == [other.id]  # the deleted session's turn stopped
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert engine.forgotten.count(doomed.id) == 2  # by the delete, and again once its turn ended
    service.close()


def test_a_turn_finishing_after_its_session_was_deleted_elsewhere_records_and_keeps_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # this process does not see the delete before the draw ends (it reads the stored flag once an hour)
    service, engine, session, _ = held_turn(tmp_path, cancel_poll_seconds=3600)
    with caplog.at_level(logging.WARNING):
        Database(service.db.url).delete_session(session.id)  # another process deletes the session
        engine.hold.set()
        wait_until(lambda: engine.forgotten)  # the turn has ended
    assert image_files(tmp_path) == set()  # the files the turn wrote went with it
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert engine.forgotten == [session.id]
    service.close()


# --- fair scheduling ------------------------------------------------------------------------------------


def test_one_worker_serves_sessions_round_robin_keeping_each_sessions_order(tmp_path: Path) -> None:
    service, engine = make_service(tmp_path, worker_threads=1)
    engine.hold.clear()
    busy, late = new_session(service, "busy"), new_session(service, "late")
    for n in range(8):
        service.submit_turn(busy, TurnRequest(message=f"turn {n}"))
    service.submit_turn(late, TurnRequest(message="just one"))
    engine.hold.set()
    for index in range(1, 9):
        finished(service, busy, index)
    finished(service, late, 1)
    order = [(session_id, index) for session_id, index, _ in engine.started]
    assert order[:3] == [(busy.id, 1), (late.id, 1), (busy.id, 2)]
    assert [index for session_id, index in order if session_id == busy.id] == list(range(1, 9))
    service.close()


# --- the queue cap and idempotency, atomic with the insert ---------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def any_service(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[TurnService, ScriptedEngine]:
    overrides = {} if request.param == "sqlite" else {"database_url": request.getfixturevalue("postgres_url")}
    service, engine = make_service(tmp_path, **overrides)
    engine.hold.clear()
    yield service, engine
    engine.hold.set()
    service.close()
    service.db.engine.dispose()


def test_twenty_concurrent_posts_queue_exactly_the_cap(any_service: tuple[TurnService, ScriptedEngine]) -> None:
    service, _ = any_service
    assert service.settings.max_queued_turns == 16
    session = new_session(service)
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def post(n: int) -> None:
        start.wait()
        try:
            service.submit_turn(session, TurnRequest(message=f"turn {n}"))
            outcomes.append("accepted")
        except QueueFull:
            outcomes.append("full")

    threads = [threading.Thread(target=post, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["accepted"] * 16 + ["full"] * 4
    assert len([t for t in service.db.list_turns(session.id) if not t.status.finished]) == 16


def test_an_idempotency_key_replays_the_same_request_and_refuses_another(
    any_service: tuple[TurnService, ScriptedEngine],
) -> None:
    service, _ = any_service
    session = new_session(service)
    first = service.submit_turn(session, TurnRequest(message="a girl"), idempotency_key="k")
    # the same request, even written differently (explicit null), replays the first turn
    again = service.submit_turn(session, TurnRequest.model_validate({"message": "a girl", "settings": None}), "k")
    assert again.id == first.id
    with pytest.raises(IdempotencyKeyReused, match="different request body"):
        service.submit_turn(session, TurnRequest(message="a boy"), idempotency_key="k")
    assert [t.request.message for t in service.db.list_turns(session.id)] == ["a girl"]
