"""Several API processes on one PostgreSQL database, side by side in one run (scripted engine, no models:
the numbers are the service's own costs).

1. load: 10 sessions x 3 turns (each turn holds its worker thread `--pause` seconds, as a draw would), posted
   at random to 1 API process, then to 2 (each with one worker thread): turns/minute and p95 turn latency
   (created_at -> finished_at as stored);
2. events across processes: turns posted to process A; the arrival of each `done` event on an SSE stream of
   process B (woken by PostgreSQL NOTIFY, then reading the events table) minus its arrival on A's stream;
3. takeover: the process driving a turn is SIGKILLed; time from the kill to `done` on the other process's
   stream, with `--lease` seconds leases (takeover waits for the lease to expire, then the poll).

    PYTHONPATH=. .venv/bin/python bench/bench_api_processes.py [--pause 0.2] [--lease 2]
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

from sqlalchemy import create_engine, text

from studio.storage.database import Database
from tests.conftest import POSTGRES_ADMIN
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pause", type=float, default=0.2, help="seconds each load turn holds its worker")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--event-turns", type=int, default=20)
    args = parser.parse_args()
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
