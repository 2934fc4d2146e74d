"""The drawer pool on this machine, side by side in one run:

1. queue overhead per job with a no-op drawer (one worker): enqueue → a worker starts it → its outcome is stored
   in Redis → the API side (CeleryDrawer.draw) has the result; p50/p95 of each leg and of the whole trip;
2. whole explicit-plan turns through the service with the no-op drawer, post → the `done` event (what SSE
   relays), embedded against the pool: the pool's cost per turn as a user sees it;
3. throughput of 2 CPU workers against 1 on tiny-preset jobs (random-weight models, 1 torch thread per
   worker), each configuration fed by as many client threads as it has workers.

Needs Redis at STUDIO_DRAWER__BROKER_URL (default redis://127.0.0.1:6379/0). Workers are real `studio worker`
processes, stopped at the end.

    .venv/bin/python bench/bench_scaleout.py [--overhead-jobs 100] [--tiny-jobs 16] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from studio.draw import DrawJob, DrawResult, DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.settings import DrawerBackendSettings, Settings
from workers.drawer_client import CeleryDrawer
from workers.jobs import JobStore, redis_client
from workers.pool import PoolRecords
from workers.scope import job_id_for, job_scope

ROOT = Path(__file__).resolve().parents[1]


def noop_drawer(settings: Settings, preset: str) -> object:
    """A drawer that returns a blank 64×64 picture at once (the pool's own cost, nothing else)."""
    from studio.images import encode_png

    blank = encode_png(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (64, 64)))

    class Noop:
        def draw(self, job: DrawJob, on_step: object = None, cancel: object = None) -> DrawResult:
            return DrawResult(image=blank, width=64, height=64, seed=0)

    return Noop()


def start_workers(pool: DrawerBackendSettings, count: int, **env: str) -> list[subprocess.Popen[bytes]]:
    records = PoolRecords(redis_client(pool.broker_url, 2), pool.prefix)
    known = len(records.workers())
    environment = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_DRAWER__")}
    environment.update({f"STUDIO_DRAWER__{k.upper()}": str(v) for k, v in pool.model_dump(exclude_none=True).items()})
    environment.update(PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'bench'}", OMP_NUM_THREADS="1", **env)
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "entrypoints.cli", "worker", "--preset", "tiny", "--loglevel", "WARNING"],
            cwd=ROOT, env=environment, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    deadline = time.monotonic() + 300
    while len(records.workers()) < known + count:
        if time.monotonic() > deadline:
            for process in processes:
                os.killpg(process.pid, signal.SIGKILL)
            raise RuntimeError("workers did not start")
        time.sleep(0.1)
    return processes


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        os.kill(process.pid, signal.SIGTERM)  # the worker's main process: a warm shutdown
    for process in processes:
        process.wait(timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def overhead(base: DrawerBackendSettings, jobs: int) -> dict[str, list[float]]:
    pool = base.model_copy(update={"prefix": f"bench{uuid.uuid4().hex[:8]}", "factory": "bench_scaleout:noop_drawer"})
    processes = start_workers(pool, 1)
    drawer = CeleryDrawer(pool)
    store = JobStore(drawer.redis, pool.prefix)
    drawer.draw(DrawJob(plan=TurnPlan(height=64, width=64), settings=DrawSettings(steps=1)))  # warm, not counted
    legs: dict[str, list[float]] = {"enqueue→start": [], "start→stored": [], "stored→returned": [], "total": []}
    job = DrawJob(plan=TurnPlan(height=64, width=64, background="a room"), settings=DrawSettings(steps=1, seed=1))
    try:
        for index in range(jobs):
            with job_scope(f"overhead:{index}"):
                sent = time.time()
                drawer.draw(job)
                returned = time.time()
                outcome = store.outcome(job_id_for(job))
            assert outcome is not None
            legs["enqueue→start"].append(outcome.started_at - outcome.enqueued_at)
            legs["start→stored"].append(outcome.finished_at - outcome.started_at)
            legs["stored→returned"].append(returned - outcome.finished_at)
            legs["total"].append(returned - sent)
    finally:
        stop_workers(processes)
    return legs


def turn_latency(base: DrawerBackendSettings, turns: int, pooled: bool) -> list[float]:
    """Seconds from submit_turn to the turn's `done` event, turn after turn, in one session (SQLite)."""
    import tempfile

    from entrypoints.runtime import build_service
    from studio.turns import TurnEvent, TurnRequest

    pool = base.model_copy(update={"prefix": f"bench{uuid.uuid4().hex[:8]}", "factory": "bench_scaleout:noop_drawer"})
    processes = start_workers(pool, 1) if pooled else []
    with tempfile.TemporaryDirectory() as data:
        drawer = pool if pooled else base.model_copy(update={"backend": "embedded"})
        settings = Settings(data_dir=Path(data), drawer=drawer)
        service = build_service(settings, drawer=None if pooled else noop_drawer(settings, "tiny"))
        service.start()
        done = threading.Event()

        def on_event(event: TurnEvent) -> None:
            if event.type == "done":
                done.set()

        service.bus.subscribe_all(on_event)
        session = service.create_session("bench", "latency", 64, 64, DrawSettings(steps=1, seed=1))
        plan = TurnPlan(height=64, width=64, background="a room")
        seconds = []
        try:
            for index in range(turns + 1):
                done.clear()
                started = time.perf_counter()
                service.submit_turn(session, TurnRequest(plan=plan.model_copy(update={"caption": f"take {index}"})))
                if not done.wait(60):
                    raise RuntimeError("a turn did not finish")
                if index:  # the first turn warms the service up
                    seconds.append(time.perf_counter() - started)
        finally:
            service.close()
            stop_workers(processes)
    return seconds


def tiny_job(index: int, steps: int) -> DrawJob:
    plan = TurnPlan(
        height=128,
        width=128,
        caption=f"a cat and a dog, take {index}",
        items=[
            PlanItem(subject_id="1", phrase="a cat", box=Box(x=8, y=16, w=48, h=64)),
            PlanItem(subject_id="2", phrase="a dog", box=Box(x=64, y=24, w=56, h=72)),
        ],
    )
    # the demo's proportions: subject init over the first third, prerendered references at half the steps
    settings = DrawSettings(
        preset="tiny",
        steps=steps,
        seed=index,
        refine_step=max(1, steps * 2 // 3),
        subject_init_steps=max(1, steps // 3),
        prerender_steps=max(1, steps // 2),
    )
    return DrawJob(plan=plan, settings=settings)


def throughput(base: DrawerBackendSettings, workers: int, jobs: int, steps: int) -> float:
    """Jobs per minute of `workers` tiny-preset workers fed by as many client threads."""
    pool = base.model_copy(update={"prefix": f"bench{uuid.uuid4().hex[:8]}", "factory": None})
    processes = start_workers(pool, workers)
    drawer = CeleryDrawer(pool)

    def feed(indices: list[int]) -> float:
        """Seconds to draw every job of `indices` with one client thread per worker."""
        pending = list(indices)
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not pending:
                        return
                    index = pending.pop()
                drawer.draw(tiny_job(index, steps))

        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    try:
        feed([jobs + k for k in range(workers)])  # one first job per worker warms it; not counted
        seconds = feed(list(range(jobs)))
    finally:
        stop_workers(processes)
    return jobs / seconds * 60


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--overhead-jobs", type=int, default=100)
    parser.add_argument("--turns", type=int, default=50)
    parser.add_argument("--tiny-jobs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    base = Settings().drawer.model_copy(update={"backend": "celery", "heartbeat_s": 1.0})

    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    legs = overhead(base, args.overhead_jobs)
    print(f"\nqueue overhead, no-op drawer, 1 worker, {args.overhead_jobs} jobs one after another (ms):")
    print("| leg | p50 | p95 |\n|---|---|---|")
    for leg, values in legs.items():
        print(f"| {leg} | {percentile(values, 0.5) * 1000:.1f} | {percentile(values, 0.95) * 1000:.1f} |")

    embedded = turn_latency(base, args.turns, pooled=False)
    pooled = turn_latency(base, args.turns, pooled=True)
    print(f"\nexplicit-plan turns through the service, no-op drawer, {args.turns} turns one after another (ms):")
    print("| drawer | post → done p50 | p95 |\n|---|---|---|")
    for name, values in (("embedded", embedded), ("pool, 1 worker", pooled)):
        print(f"| {name} | {percentile(values, 0.5) * 1000:.1f} | {percentile(values, 0.95) * 1000:.1f} |")

    one = throughput(base, 1, args.tiny_jobs, args.steps)
    two = throughput(base, 2, args.tiny_jobs, args.steps)
    print(f"\ntiny preset, 128×128, 2 subjects, {args.steps} steps, {args.tiny_jobs} jobs, 1 torch thread per worker:")
    print("| workers | jobs/min | speed-up |\n|---|---|---|")
    print(f"| 1 | {one:.1f} | 1.00× |\n| 2 | {two:.1f} | {two / one:.2f}× |")
    load = os.getloadavg()
    print(f"\nload average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
