"""Real Redis (and PostgreSQL) on 127.0.0.1 and real `studio worker` processes with a fast test drawer. Each
test has its own key prefix, so its queues and keys are its own. Skipped when Redis is unreachable, except
under CI (`CI` set), where that is a failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from entrypoints.runtime import build_service
from studio.service import TurnService
from studio.settings import DrawerBackendSettings, Settings
from studio.turns import Turn
from workers.pool import PoolRecords, WorkerBeat

REDIS_URL = os.environ.get("STUDIO_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60.0


def require(reason: str | None) -> None:
    """Skip with `reason`, or fail under CI: these tests must run there."""
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def wait_until(condition: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        require(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return REDIS_URL


@pytest.fixture
def pool_settings(redis_url: str) -> Iterator[DrawerBackendSettings]:
    """Drawer-pool settings with a prefix of this test's own; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield DrawerBackendSettings(
        backend="celery",
        broker_url=redis_url,
        prefix=prefix,
        result_timeout_s=60,
        heartbeat_s=0.3,
        visibility_timeout_s=2,
        factory="tests.workers.drawers:pausing_drawer",
    )
    client = redis.Redis.from_url(redis_url)
    keys = [key for pattern in (f"{prefix}*", f"_kombu.binding*.{prefix}.*") for key in client.scan_iter(match=pattern)]
    if keys:
        client.delete(*keys)


def settings_env(pool: DrawerBackendSettings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["PYTHONPATH"] = str(ROOT)
    for field, value in pool.model_dump(exclude_none=True).items():
        env[f"STUDIO_DRAWER__{field.upper()}"] = str(value)
    env.update(extra)
    return env


class Workers:
    """`studio worker` subprocesses of one test, each in its own process group; all killed at the end."""

    def __init__(self, pool: DrawerBackendSettings, log_dir: Path) -> None:
        self.pool = pool
        self.records = PoolRecords(redis.Redis.from_url(pool.broker_url), pool.prefix)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, preset: str = "tiny", wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        known = {beat.name for beat in self.records.workers()}
        log = (self.log_dir / f"worker{len(self.processes)}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "worker", "--preset", preset, "--loglevel", "WARNING"],
            cwd=ROOT,
            env=settings_env(self.pool, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        if wait:
            wait_until(lambda: {b.name for b in self.records.workers()} - known, START_TIMEOUT_S, "a worker heartbeat")
        return process

    def beat_of(self, process: subprocess.Popen[bytes]) -> WorkerBeat | None:
        """The heartbeat of the worker started as `process` (its pool process is a child of it)."""
        for beat in self.records.workers():
            if _parent(beat.pid) == process.pid:
                return beat
        return None

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.fixture
def workers(pool_settings: DrawerBackendSettings, tmp_path: Path) -> Iterator[Workers]:
    pool = Workers(pool_settings, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """A new, empty PostgreSQL database (tests/conftest.py: failing instead of skipping under CI)."""
    return postgres_url


@pytest.fixture
def pool_service(
    pool_settings: DrawerBackendSettings, pg_url: str, tmp_path: Path
) -> Iterator[Callable[..., TurnService]]:
    """Builds the real service (offline agents, PostgreSQL) drawing through the pool; closed afterwards."""
    built: list[TurnService] = []

    def build(**drawer: object) -> TurnService:
        settings = Settings(
            data_dir=tmp_path / "data", database_url=pg_url, drawer=pool_settings.model_copy(update=drawer)
        )
        service = build_service(settings)
        service.start()
        built.append(service)
        return service

    yield build
    for service in built:
        service.close(wait=True)
        service.db.engine.dispose()


def finished_turn(service: TurnService, session_id: str, index: int, timeout: float = 60.0) -> Turn:
    def finished() -> bool:
        turn = service.db.get_turn(session_id, index)
        return turn is not None and turn.status.finished

    wait_until(finished, timeout, f"turn {index} to finish")
    turn = service.db.get_turn(session_id, index)
    assert turn is not None
    return turn
