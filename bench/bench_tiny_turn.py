"""Wall time of whole tiny-preset turns through the real service (HTTP, SDK, drawer, vision), side by side.

Cases: a 512 x 512 turn on `tiny` with 2 subjects (target <= 2 s) and a 1024 x 1024 turn on `tiny-sdxl`
with 5 subjects (target <= 6 s), each with the default draw settings (30 steps, subject init and the tiny
vision models on), posted as explicit plans so that no planner time is counted. The first turn of each
preset is a warm-up (model build) and is reported apart. `--profile` writes a cProfile of one turn of each
case to OUT/<case>.prof and prints its top entries.

    PYTHONPATH=. .venv/bin/python bench/bench_tiny_turn.py [--repeats 2] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.client import StudioClient  # noqa: E402
from entrypoints.cli import _database  # noqa: E402
from entrypoints.server import BackgroundServer, free_port  # noqa: E402
from studio.draw import DrawSettings  # noqa: E402
from studio.settings import Settings  # noqa: E402

CASES = [("tiny", 512, 2), ("tiny-sdxl", 1024, 5)]
PHRASES = ["a girl in a red coat", "a brown dog", "a boy with a kite", "a white cat", "an old man with a cane"]


def plan(side: int, subjects: int) -> dict:
    width = side // subjects
    items = [
        {
            "subject_id": str(i + 1),
            "phrase": PHRASES[i],
            "box": {"x": i * width + 8, "y": side // 4, "w": width - 16, "h": side // 2},
        }
        for i in range(subjects)
    ]
    return {"height": side, "width": side, "caption": "a walk in the park", "background": "a park", "items": items}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-tiny-")))
    args = parser.parse_args()
    base = Settings()
    settings = base.model_copy(update={"data_dir": args.out / "data", "host": "127.0.0.1", "port": free_port()})
    key = _database(settings).create_key("bench", "bench_tiny_turn")
    print(f"load average before: {os.getloadavg()}")
    with BackgroundServer(settings) as server, StudioClient(server.url, api_key=key) as client:
        sessions = {}
        for preset, side, subjects in CASES:
            draw = DrawSettings(preset=preset, seed=1)
            session = client.create_session(title=preset, height=side, width=side, settings=draw)
            sessions[preset] = session.id
            started = time.perf_counter()
            client.wait(client.post_turn(session.id, plan=plan(side, subjects)))
            print(f"{preset} {side}² warm-up turn (builds the models): {time.perf_counter() - started:.2f} s")
        times: dict[str, list[float]] = {preset: [] for preset, _, _ in CASES}
        for _ in range(args.repeats):
            for preset, side, subjects in CASES:  # interleaved, so that load changes hit both cases
                started = time.perf_counter()
                client.wait(client.post_turn(sessions[preset], plan=plan(side, subjects)))
                times[preset].append(time.perf_counter() - started)
        for preset, side, subjects in CASES:
            runs = ", ".join(f"{t:.2f}" for t in times[preset])
            print(f"{preset} {side}² {subjects} subjects: median {statistics.median(times[preset]):.2f} s ({runs})")
        if args.profile:  # the server runs turns in this process: profile it around one turn
            for preset, side, subjects in CASES:
                profile = cProfile.Profile()
                profile.enable()
                client.wait(client.post_turn(sessions[preset], plan=plan(side, subjects)))
                profile.disable()
                profile.dump_stats(args.out / f"{preset}.prof")
                text = io.StringIO()
                pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
                print(f"--- {preset}: top functions by own time\n{text.getvalue()}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
