"""Several API processes on one fresh PostgreSQL database (real processes: `python -m tests.scaleout.api_child`).
Without a reachable PostgreSQL the tests skip, except under CI (`CI` set), where they fail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from entrypoints.server import free_port
from studio.storage.database import Database

ROOT = Path(__file__).resolve().parents[2]
WAIT_SECONDS = 30.0
"""A safety limit on every wait (never an assertion on speed)."""


@pytest.fixture
def migrated_postgres_url(postgres_url: str) -> str:
    """A new PostgreSQL database (tests/conftest.py), migrated before any process opens it."""
    db = Database(postgres_url)
    db.migrate()
    db.engine.dispose()
    return postgres_url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of each kind."""
    if request.param == "postgres":
        return request.getfixturevalue("migrated_postgres_url")
    url = f"sqlite:///{tmp_path / 'studio.db'}"
    Database(url).migrate()
    return url


class ApiProcess:
    """One API child process; `kill()` sends SIGKILL (no shutdown code runs)."""

    def __init__(
        self, data_dir: Path, database_url: str, lease_seconds: float, log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
        args = [str(data_dir), database_url, str(self.port), str(lease_seconds)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.scaleout.api_child", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.process.pid

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"API process exited with {self.process.returncode}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("API process did not start")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def start_api(tmp_path: Path, migrated_postgres_url: str) -> Iterator[Callable[..., list[ApiProcess]]]:
    """Starts API processes sharing one database and data folder: `start_api(n, lease_seconds=…)`."""
    started: list[ApiProcess] = []

    def start(count: int, lease_seconds: float = 10.0) -> list[ApiProcess]:
        batch = [
            ApiProcess(tmp_path, migrated_postgres_url, lease_seconds, tmp_path / f"api-{len(started) + k}.log")
            for k in range(count)
        ]
        started.extend(batch)
        for process in batch:
            process.wait_ready()
        return batch

    yield start
    for process in started:
        process.stop()


def draws(data_dir: Path) -> list[dict]:
    """The engine's start/finish lines of every process, in the order they were written."""
    path = data_dir / "draws.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def new_session(api: ApiProcess) -> str:
    response = httpx.post(f"{api.url}/v1/sessions", json={"height": 64, "width": 96})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def post_turn(api: ApiProcess, session_id: str, message: str) -> dict:
    response = httpx.post(f"{api.url}/v1/sessions/{session_id}/turns", json={"message": message})
    assert response.status_code == 202, response.text
    return response.json()


def wait_until(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting: {what}")


def turns_of(api: ApiProcess, session_id: str) -> list[dict]:
    return httpx.get(f"{api.url}/v1/sessions/{session_id}/turns").json()


def all_finished(api: ApiProcess, session_id: str, count: int) -> list[dict] | None:
    turns = turns_of(api, session_id)
    finished = len(turns) == count and all(t["status"] in ("done", "failed") for t in turns)
    return turns if finished else None


class EventReader(threading.Thread):
    """Reads a session's SSE stream from one API process until `until(events)` holds."""

    def __init__(self, api: ApiProcess, session_id: str, until: Callable[[list[dict]], bool]) -> None:
        super().__init__(daemon=True)
        self.url = f"{api.url}/v1/sessions/{session_id}/events"
        self.until = until
        self.events: list[dict] = []
        self.connected = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(WAIT_SECONDS)) as client,
                connect_sse(client, "GET", self.url) as source,
            ):
                self.connected.set()
                for sse in source.iter_sse():
                    self.events.append(json.loads(sse.data))
                    if self.until(self.events):
                        return
        except BaseException as exc:  # reported by result()
            self.error = exc
        finally:
            self.connected.set()

    def result(self) -> list[dict]:
        self.join(WAIT_SECONDS)
        assert not self.is_alive(), "the event stream did not end"
        assert self.error is None, self.error
        return self.events


def done_count(events: list[dict], index: int) -> int:
    return sum(1 for e in events if e["type"] == "done" and e["turn_index"] == index)
