"""Several API processes on one PostgreSQL database, side by side in one run (scripted engine, no models:
the numbers are the service's own costs).

1. load: 10 sessions x 3 turns (each turn holds its worker thread `--pause` seconds, as a draw would), posted
   at random to 1 API process, then to 2 (each with one worker thread): turns/minute and p95 turn latency
   (created_at -> finished_at as stored);
2. events across processes: turns posted to process A; the arrival of each `done` event on an SSE stream of
   process B (woken by PostgreSQL NOTIFY, then reading the events table) minus its arrival on A's stream;
3. takeover: the process driving a turn is SIGKILLed; time from the kill to `done` on the other process's
   stream, with `--lease` seconds leases (takeover waits for the lease to expire, then the poll).

With `--pool` it measures instead the load of tests/workers/test_combined.py with the real offline planner:
10 sessions x 3 turns of a 3-message dialogue, the test drawer pausing `--step` seconds per step (4 steps), in
one embedded process on SQLite (drawer in-process, one worker thread: the default), then on 2 API processes +
2 `studio worker` processes (Celery on the local Redis, PostgreSQL): turns/minute and p95 turn latency.

    PYTHONPATH=. .venv/bin/python bench/bench_api_processes.py [--pause 0.2] [--lease 2]
    PYTHONPATH=. .venv/bin/python bench/bench_api_processes.py --pool [--step 0.05]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from entrypoints.runtime import build_service
from studio.draw import DrawSettings
from studio.settings import DrawerBackendSettings, Settings
from studio.storage.database import Database
from studio.turns import Turn, TurnRequest, TurnStatus
from tests.postgres import POSTGRES_SERVER
from tests.scaleout.conftest import (
    ApiProcess,
    EventReader,
    all_finished,
    done_count,
    draws,
    new_session,
    post_turn,
    wait_until,
)
from tests.workers.conftest import REDIS_URL, Workers, finished_turn, settings_env
from tests.workers.drawers import PausingDrawer
from tests.workers.test_combined import DIALOGUE

POSTGRES_ADMIN = f"{POSTGRES_SERVER}/test"


def fresh_database() -> str:
    name = f"studio_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    db = Database(url)
    db.migrate()
    db.engine.dispose()
    return url


def start(count: int, lease: float, data_dir: Path) -> list[ApiProcess]:
    url = fresh_database()
    apis = [ApiProcess(data_dir, url, lease, data_dir / f"api-{k}.log") for k in range(count)]
    for api in apis:
        api.wait_ready()
    return apis


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]


def load(count: int, sessions: int, per_session: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        apis = start(count, 30.0, Path(folder))
        try:
            rng = random.Random(12)
            ids = [new_session(apis[0]) for _ in range(sessions)]
            started = time.perf_counter()

            def post(session_id: str) -> None:
                for _ in range(per_session):
                    post_turn(rng.choice(apis), session_id, "a girl, pause")

            with ThreadPoolExecutor(max_workers=sessions) as pool:
                list(pool.map(post, ids))
            turns = [
                turn
                for session_id in ids
                for turn in wait_until(lambda s=session_id: all_finished(apis[0], s, per_session), "session done")
            ]
            wall = time.perf_counter() - started
            assert all(t["status"] == "done" for t in turns)
            latencies = [_time(t["finished_at"]) - _time(t["created_at"]) for t in turns]
            return len(turns) / wall * 60, p95(latencies)
        finally:
            for api in apis:
                api.stop()


def _time(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def cross_process_events(turns: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        a, b = start(2, 30.0, Path(folder))
        try:
            session_id = new_session(a)
            arrivals: dict[str, dict[int, float]] = {"a": {}, "b": {}}

            def until(side: str):
                def check(events: list[dict]) -> bool:
                    last = events[-1]
                    if last["type"] == "done":
                        arrivals[side][last["turn_index"]] = time.perf_counter()
                    return done_count(events, turns) == 1

                return check

            readers = [EventReader(a, session_id, until("a")), EventReader(b, session_id, until("b"))]
            for reader in readers:
                reader.start()
                reader.connected.wait()
            for index in range(1, turns + 1):
                post_turn(a, session_id, "a girl")
                wait_until(lambda i=index: i in arrivals["a"] and i in arrivals["b"], "done on both streams")
            return [arrivals["b"][i] - arrivals["a"][i] for i in range(1, turns + 1)]
        finally:
            for api in (a, b):
                api.stop()


def takeover(lease: float) -> float:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        (data_dir / "hold").touch()
        a, b = start(2, lease, data_dir)
        try:
            session_id = new_session(a)
            post_turn(a, session_id, "hold")
            starts = wait_until(lambda: [d["pid"] for d in draws(data_dir) if d["what"] == "start"], "turn started")
            driver_pid = starts[0]
            driver, other = (a, b) if driver_pid == a.pid else (b, a)
            reader = EventReader(other, session_id, lambda events: done_count(events, 1) == 1)
            reader.start()
            reader.connected.wait()
            time.sleep(lease / 2)  # mid-lease, as a crash would be
            killed = time.perf_counter()
            driver.kill()
            (data_dir / "hold").unlink()
            reader.result()
            return time.perf_counter() - killed
        finally:
            for api in (a, b):
                api.stop()


def _figures(turns: list[Turn], wall: float) -> tuple[float, float]:
    assert all(t.status == TurnStatus.DONE for t in turns), [t.error for t in turns]
    latencies = [(t.finished_at - t.created_at).total_seconds() for t in turns if t.finished_at is not None]
    return len(turns) / wall * 60, p95(latencies)


def pool_load_embedded(step: float, sessions: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        settings = Settings(data_dir=data_dir, database_url=f"sqlite:///{data_dir / 'studio.db'}")
        service = build_service(settings, drawer=PausingDrawer(steps=4, step_seconds=step))
        service.start()
        try:
            ids = [service.create_session("t", "", 64, 64, DrawSettings(steps=2, seed=7)).id for _ in range(sessions)]
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=sessions) as pool:
                list(
                    pool.map(
                        lambda s: [
                            service.submit_turn(service.db.get_session(s), TurnRequest(message=m)) for m in DIALOGUE
                        ],
                        ids,
                    )
                )
            turns = [finished_turn(service, s, t.index, timeout=600) for s in ids for t in service.db.list_turns(s)]
            return _figures(turns, time.perf_counter() - started)
        finally:
            service.close(wait=True)


def pool_load_scaled(step: float, sessions: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        url = fresh_database()
        pool_settings = DrawerBackendSettings(
            backend="celery",
            broker_url=REDIS_URL,
            prefix=f"bench{uuid.uuid4().hex[:8]}",
            factory="tests.workers.drawers:pausing_drawer",
        )
        env = settings_env(pool_settings, SCALEOUT_CHILD_ENGINE="studio", STUDIO_TEST_STEP_SECONDS=str(step))
        apis = [ApiProcess(data_dir / "shared", url, 10.0, data_dir / f"api-{k}.log", env=env) for k in range(2)]
        workers = Workers(pool_settings, data_dir)
        try:
            for api in apis:
                api.wait_ready()
            for _ in range(2):
                workers.start(STUDIO_TEST_STEP_SECONDS=str(step))
            ids = [
                httpx.post(
                    f"{apis[0].url}/v1/sessions", json={"height": 64, "width": 64, "settings": {"steps": 2}}
                ).json()["id"]
                for _ in range(sessions)
            ]
            started = time.perf_counter()

            def post(session_id: str, seed: int) -> None:
                rng = random.Random(seed)
                for message in DIALOGUE:
                    url_ = f"{rng.choice(apis).url}/v1/sessions/{session_id}/turns"
                    assert httpx.post(url_, json={"message": message}, timeout=30).status_code == 202

            with ThreadPoolExecutor(max_workers=sessions) as pool:
                list(pool.map(post, ids, range(sessions)))
            for session_id in ids:
                wait_until(lambda s=session_id: all_finished(apis[0], s, len(DIALOGUE)), "session done")
            wall = time.perf_counter() - started
            db = Database(url)
            turns = [t for s in ids for t in db.list_turns(s)]
            db.engine.dispose()
            return _figures(turns, wall)
        finally:
            workers.stop_all()
            for api in apis:
                api.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause", type=float, default=0.2, help="seconds each load turn holds its worker")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--event-turns", type=int, default=20)
    parser.add_argument("--pool", action="store_true", help="embedded process vs 2 API processes + 2 workers")
    parser.add_argument("--step", type=float, default=0.05, help="--pool: drawer seconds per step")
    args = parser.parse_args()
    if args.pool:
        for name, run in (("1 embedded process", pool_load_embedded), ("2 API + 2 workers", pool_load_scaled)):
            per_minute, latency = run(args.step, 10)
            print(f"pool load, {name}: {per_minute:.0f} turns/min, p95 turn latency {latency:.2f} s")
        return
    os.environ["SCALEOUT_CHILD_PAUSE"] = str(args.pause)
    os.environ["SCALEOUT_CHILD_THREADS"] = "1"
    for count in (1, 2):
        per_minute, latency = load(count, sessions=10, per_session=3)
        print(f"load, {count} API process(es): {per_minute:.0f} turns/min, p95 turn latency {latency:.2f} s")
    delays = cross_process_events(args.event_turns)
    print(
        f"done on B's stream after A's ({len(delays)} turns): p50 {statistics.median(delays) * 1000:.1f} ms, "
        f"p95 {p95(delays) * 1000:.1f} ms"
    )
    print(f"takeover, lease {args.lease} s: SIGKILL -> done on the other process {takeover(args.lease):.2f} s")


if __name__ == "__main__":
    main()
