"""How the drawer pool fails, against the real Redis and PostgreSQL with real `studio worker` processes."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from entrypoints.server import free_port
from studio.draw import DrawJob, DrawSettings
from studio.failures import DrawCancelled, DrawError
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.service import TurnService
from studio.settings import DrawerBackendSettings
from studio.turns import TurnRequest, TurnStatus
from tests.agents.fakes import png
from tests.workers.conftest import Workers, finished_turn, wait_until
from workers.drawer_client import CeleryDrawer
from workers.jobs import JobOutcome, JobStore, queue_name
from workers.scope import job_scope

SETTINGS = DrawSettings(steps=4, seed=7)


def outcomes_in(pool: DrawerBackendSettings, scope: str) -> list[JobOutcome]:
    """The stored outcomes of the jobs of one job scope."""
    store = JobStore(redis.Redis.from_url(pool.broker_url), pool.prefix)
    keys = store.redis.scan_iter(match=store.key(f"{scope}:*", "outcome"))
    return [JobOutcome.model_validate_json(store.redis.get(key)) for key in keys]


def outcomes(pool: DrawerBackendSettings, turn_id: str) -> list[JobOutcome]:
    """The stored outcomes of the jobs of one turn (the runtime scopes them by turn id)."""
    return outcomes_in(pool, f"turn:{turn_id}")


def test_worker_killed_mid_job_finishes_on_another_worker(
    pool_service: Callable[..., TurnService], workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    first = workers.start(STUDIO_TEST_STEP_SECONDS="5")  # killed long before it would finish
    service = pool_service()
    session = service.create_session("t", "kill", 64, 64, SETTINGS)
    turn = service.submit_turn(session, TurnRequest(message="a cat sits on a mat"))

    def first_draws() -> bool:
        beat = workers.beat_of(first)
        return beat is not None and beat.current_job is not None

    wait_until(first_draws, 30, "the first worker to take the job")
    second = workers.start()
    workers.kill(first)

    done = finished_turn(service, session.id, turn.index)
    assert done.status == TurnStatus.DONE and done.image_id is not None, done.error
    def done_events() -> int:
        return [e.type for e in service.db.events_after(session.id, 0)].count("done")

    wait_until(done_events, 30, "the done event")  # stored just after the turn's record
    assert done_events() == 1
    [outcome] = outcomes(pool_settings, turn.id)
    second_beat = workers.beat_of(second)
    assert second_beat is not None and outcome.worker == second_beat.name
    assert outcome.attempts == 2  # the killed delivery counted


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    """Starts a throw-away redis-server (no persistence) on a given port; every one is stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
        )
        started.append(process)
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        wait_until(lambda: _pings(client), 20, "redis-server to answer")
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_broker_away_refuses_turns_with_503_then_resumes(
    pool_service: Callable[..., TurnService],
    pool_settings: DrawerBackendSettings,
    redis_server: Callable[[int], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    port = free_port()
    pool = pool_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0", "connect_timeout_s": 0.5})
    service = pool_service(**pool.model_dump())
    key = service.db.create_key("t")
    workers = Workers(pool, tmp_path)
    try:
        with TestClient(create_app(service), headers={"Authorization": f"Bearer {key}"}) as client:
            session = client.post("/v1/sessions", json={"height": 64, "width": 64, "settings": {"steps": 4}}).json()
            turns = f"/v1/sessions/{session['id']}/turns"

            refused = client.post(turns, json={"message": "a cat on a mat"})
            assert refused.status_code == 503 and "unreachable" in refused.json()["detail"]
            assert refused.headers["retry-after"]
            assert client.get(turns).json() == []  # nothing half-written

            broker = redis_server(port)
            assert client.post(turns, json={"message": "a cat on a mat"}).status_code == 202
            assert client.post(turns, json={"message": "the cat sleeps"}).status_code == 202
            # no worker yet: turn 1's job waits in the queue, turn 2 waits behind it; then the broker dies
            queued = redis.Redis(port=port)
            wait_until(lambda: queued.llen(queue_name(pool.prefix, "tiny")) == 1, 30, "turn 1's job in the queue")
            broker.kill()
            broker.wait(timeout=10)
            assert client.post(turns, json={"message": "the cat jumps"}).status_code == 503
            assert len(client.get(turns).json()) == 2

            redis_server(port)  # back, empty: turn 1's job is sent again
            workers.start()
            assert client.post(turns, json={"message": "the cat jumps"}).status_code == 202
            for index in (1, 2, 3):
                assert finished_turn(service, session["id"], index).status == TurnStatus.DONE
    finally:
        workers.stop_all()


def test_undecodable_reference_fails_the_turn_without_retry(
    pool_service: Callable[..., TurnService], workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    workers.start()
    service = pool_service()
    session = service.create_session("t", "bad reference", 64, 64, SETTINGS)
    subject = service.upload_reference(session, "cat", png(32, 32))
    assert subject.reference_image_id is not None
    service.images._path(subject.reference_image_id).write_bytes(b"not an image any more")
    item = PlanItem(subject_id=subject.id, phrase="a cat", box=Box(x=0, y=0, w=32, h=32))
    plan = TurnPlan(height=64, width=64, items=[item])
    turn = service.submit_turn(session, TurnRequest(plan=plan))

    failed = finished_turn(service, session.id, turn.index)
    assert failed.status == TurnStatus.FAILED
    assert failed.error == f"the reference of subject {subject.id} cannot be decoded"
    [outcome] = outcomes(pool_settings, turn.id)
    assert outcome.status == "failed" and outcome.attempts == 1


def test_job_that_crashes_its_worker_gives_up_after_max_attempts(
    workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    workers.start(STUDIO_TEST_CRASH="1")
    drawer = CeleryDrawer(pool_settings)
    job = DrawJob(plan=TurnPlan(height=64, width=64, background="a room"), settings=SETTINGS)
    with pytest.raises(DrawError, match="gave up on this job after 3 attempts"):
        drawer.draw(job)
    assert workers.processes[0].poll() is None  # the worker lives on: only its pool process died, each time


def test_a_resumed_turn_reads_back_the_picture_its_worker_stored(
    workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    """The API process that waited for a job died after the worker stored the outcome: the process that
    resumes the turn sends the same job id and gets the stored picture, with no worker drawing again."""
    process = workers.start()
    job = DrawJob(plan=TurnPlan(height=64, width=64, background="a room"), settings=DrawSettings(steps=4))
    with job_scope("turn:resumed"):
        first = CeleryDrawer(pool_settings).draw(job)
    workers.kill(process)  # no worker left: only the stored outcome can answer

    with job_scope("turn:resumed"):
        again = CeleryDrawer(pool_settings).draw(job)
    assert again.image == first.image
    [outcome] = outcomes_in(pool_settings, "turn:resumed")
    assert outcome.attempts == 1


def test_a_cancel_stops_the_worker_and_a_resumed_turn_draws_again(
    workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    """A cancel reaches the worker between two steps. A cancelled job has no picture: when the turn is resumed
    (the API process that cancelled it was shutting down), its job is drawn again."""
    process = workers.start(STUDIO_TEST_STEP_SECONDS="0.3")
    job = DrawJob(plan=TurnPlan(height=64, width=64, background="a room"), settings=DrawSettings(steps=4))
    cancel = threading.Event()

    def cancel_once_drawing() -> None:
        wait_until(lambda: (beat := workers.beat_of(process)) is not None and beat.current_job, 30, "the job")
        cancel.set()

    canceller = threading.Thread(target=cancel_once_drawing)
    canceller.start()
    with job_scope("turn:cancelled"), pytest.raises(DrawCancelled):
        CeleryDrawer(pool_settings).draw(job, cancel=cancel)
    canceller.join()
    wait_until(lambda: [o.status for o in outcomes_in(pool_settings, "turn:cancelled")] == ["cancelled"], 30, "stop")

    with job_scope("turn:cancelled"):
        assert CeleryDrawer(pool_settings).draw(job).width == 64
    [outcome] = outcomes_in(pool_settings, "turn:cancelled")
    assert outcome.status == "done"
