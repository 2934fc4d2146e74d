"""Wall time of whole tiny-preset turns through the real service (HTTP, SDK, drawer, vision), side by side.

Cases: a 512 x 512 turn on `tiny` with 2 subjects (target <= 2 s) and a 1024 x 1024 turn on `tiny-sdxl`
with 5 subjects (target <= 6 s), each with the default draw settings (30 steps, subject init and the tiny
vision models on), posted as explicit plans so that no planner time is counted. The first turn of each
preset is a warm-up (model build) and is reported apart. `--profile` writes a cProfile of one turn of each
case to OUT/<case>.prof and prints its top entries.

`--before REV` measures an older revision side by side: REV's source tree (`git archive`) and this one each
run a service in a child process (same interpreter and packages, the tree first on the import path); the
parent interleaves their turns case by case, so load changes hit both, and prints one table. Torch threads
are the service's default (both cores here) unless `--threads` says otherwise.

    PYTHONPATH=. .venv/bin/python bench/bench_tiny_turn.py [--repeats 2] [--profile] [--before REV]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


class Service:
    """A service on loopback with one session per case (imports from the tree first on sys.path)."""

    def __init__(self, out: Path) -> None:
        from api.client import StudioClient
        from entrypoints.cli import _database
        from entrypoints.server import BackgroundServer, free_port
        from studio.draw import DrawSettings
        from studio.settings import Settings

        base = Settings()
        settings = base.model_copy(update={"data_dir": out / "data", "host": "127.0.0.1", "port": free_port()})
        key = _database(settings).create_key("bench", "bench_tiny_turn")
        self.server = BackgroundServer(settings).__enter__()
        self.client = StudioClient(self.server.url, api_key=key).__enter__()
        self.sessions = {}
        for preset, side, _ in CASES:
            draw = DrawSettings(preset=preset, seed=1)
            self.sessions[preset] = self.client.create_session(title=preset, height=side, width=side, settings=draw).id

    def turn(self, preset: str) -> float:
        side, subjects = next((s, n) for p, s, n in CASES if p == preset)
        started = time.perf_counter()
        self.client.wait(self.client.post_turn(self.sessions[preset], plan=plan(side, subjects)))
        return time.perf_counter() - started


def child(tree: Path, out: Path, threads: int | None) -> None:
    """Serve turn requests from stdin ("<preset>\\n" → one JSON line with its wall time)."""
    sys.path.insert(0, str(tree))
    import torch

    if threads:
        torch.set_num_threads(threads)
    import drawer

    assert Path(drawer.__file__).resolve().is_relative_to(tree.resolve()), drawer.__file__
    service = Service(out)
    print(json.dumps({"ready": True, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        print(json.dumps({"seconds": service.turn(line.strip())}), flush=True)


def side_by_side(args: argparse.Namespace) -> None:
    old_tree = args.out / "before"
    old_tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", args.before], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(old_tree, filter="data")
    trees = {f"before ({args.before})": old_tree, "after (this tree)": ROOT}
    children = {}
    for name, tree in trees.items():
        command = [sys.executable, __file__, "--child", str(tree), "--out", str(args.out / name.split()[0])]
        if args.threads:
            command += ["--threads", str(args.threads)]
        children[name] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for name, proc in children.items():
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        print(f"{name}: service up, torch threads {ready['threads']}")

    def ask(name: str, preset: str) -> float:
        proc = children[name]
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(preset + "\n")
        proc.stdin.flush()
        return float(json.loads(proc.stdout.readline())["seconds"])

    warm = {(name, preset): ask(name, preset) for preset, _, _ in CASES for name in children}
    times: dict[tuple[str, str], list[float]] = {key: [] for key in warm}
    loads = [os.getloadavg()[0]]
    for _ in range(args.repeats):
        for preset, _, _ in CASES:
            for name in children:  # interleaved, so that load changes hit both trees
                times[(name, preset)].append(ask(name, preset))
        loads.append(os.getloadavg()[0])
    for proc in children.values():
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=60)
    print(f"\nload average (1 min) during the repeats: {', '.join(f'{x:.2f}' for x in loads)}")
    print("| case | target | " + " | ".join(f"{n}: median (runs)" for n in children) + " | ratio |")
    print("|---|---|" + "---|" * len(children) + "---|")
    targets = {"tiny": "≤ 2 s", "tiny-sdxl": "≤ 6 s"}
    for preset, side, subjects in CASES:
        medians = [statistics.median(times[(n, preset)]) for n in children]
        cells = [
            f"{m:.2f} s ({', '.join(f'{t:.2f}' for t in times[(n, preset)])}; warm-up {warm[(n, preset)]:.1f})"
            for m, n in zip(medians, children, strict=True)
        ]
        ratio = f"{medians[0] / medians[1]:.2f}×"
        print(f"| `{preset}` {side}², {subjects} subjects | {targets[preset]} | " + " | ".join(cells) + f" | {ratio} |")


def single(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(ROOT))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}")
    service = Service(args.out)
    for preset, side, _ in CASES:
        print(f"{preset} {side}² warm-up turn (builds the models): {service.turn(preset):.2f} s")
    times: dict[str, list[float]] = {preset: [] for preset, _, _ in CASES}
    for _ in range(args.repeats):
        for preset, _, _ in CASES:  # interleaved, so that load changes hit both cases
            times[preset].append(service.turn(preset))
    for preset, side, subjects in CASES:
        runs = ", ".join(f"{t:.2f}" for t in times[preset])
        print(f"{preset} {side}² {subjects} subjects: median {statistics.median(times[preset]):.2f} s ({runs})")
    if args.profile:  # the server runs turns in this process: profile it around one turn
        for preset, _, _ in CASES:
            profile = cProfile.Profile()
            profile.enable()
            service.turn(preset)
            profile.disable()
            profile.dump_stats(args.out / f"{preset}.prof")
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(12)
            print(f"--- {preset}: top functions by own time\n{text.getvalue()}")
    print(f"load average after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--before", metavar="REV", help="also run this git revision, side by side")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, i.e. the cores)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-tiny-")))
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.out, args.threads)
    elif args.before:
        side_by_side(args)
    else:
        single(args)


if __name__ == "__main__":
    main()
