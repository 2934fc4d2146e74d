"""p50/p95 latency of GET /v1/sessions/{id}/turns/{n} under 50 concurrent clients.

The server runs as `studio serve` in its own process (embedded SQLite, tiny preset); one explicit-plan
turn is drawn first, then every client reads that turn repeatedly.

    .venv/bin/python bench/bench_api_latency.py [--clients 50] [--requests 40]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from api.client import StudioClient
from entrypoints.server import free_port
from studio.draw import DrawSettings
from studio.storage.database import Database

PLAN = {
    "height": 64,
    "width": 64,
    "background": "a street",
    "items": [{"subject_id": "1", "phrase": "a girl", "box": {"x": 8, "y": 8, "w": 40, "h": 48}}],
}


async def hammer(url: str, headers: dict[str, str], path: str, clients: int, requests: int) -> list[float]:
    latencies: list[float] = []

    async def one_client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.get(path)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        env = {**os.environ, "STUDIO_DATA_DIR": data_dir, "STUDIO_PORT": str(port)}
        db = Database(f"sqlite:///{Path(data_dir) / 'studio.db'}")
        db.migrate()
        key = db.create_key("bench")
        server = subprocess.Popen([sys.executable, "-m", "entrypoints.cli", "serve"], env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            with StudioClient(url, api_key=key) as client:
                for _ in range(300):
                    try:
                        client.health()
                        break
                    except httpx.TransportError:
                        time.sleep(0.1)
                session = client.create_session(height=64, width=64, settings=DrawSettings(steps=2, seed=1))
                turn = client.draw_plan(session.id, PLAN)
            path = f"/v1/sessions/{session.id}/turns/{turn.index}"
            headers = {"Authorization": f"Bearer {key}"}
            asyncio.run(hammer(url, headers, path, 5, 5))  # warm-up
            started = time.perf_counter()
            latencies = asyncio.run(hammer(url, headers, path, args.clients, args.requests))
            elapsed = time.perf_counter() - started
        finally:
            server.terminate()
            server.wait(timeout=30)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(f"GET {path.split('/turns')[0]}/turns/{{n}}: {len(ordered)} requests, {args.clients} concurrent clients")
    print(f"p50 {p50 * 1000:.1f} ms   p95 {p95 * 1000:.1f} ms   throughput {len(ordered) / elapsed:.0f} req/s")


if __name__ == "__main__":
    main()
