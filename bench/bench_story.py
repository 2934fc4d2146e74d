"""A long story on the tiny preset through the real story runner: wall time and frames per second.

The story runner (studio/story_runner.py) drives the real tiny drawer (random weights, `tiny` preset) on the
service's worker pool exactly as the API does: round 0 text only, then `--rounds` rounds where every frame
attends to all frames of the previous round (the global reference, Story-Adapter's GRCA). Frames are stored in
a temporary data folder. Reported: wall time of the whole story, frames drawn, frames per second, and the
mean seconds per frame of round 0 (no image branch) and of the later rounds (with it).

Whether the drawer uses the global reference depends on the drawer build: the mechanism is printed as
`drawer implements global_reference: yes/no` (no: a drawer without GRCA ignores the mechanism; the numbers are then the
story machinery over plain frames).

Run:  .venv/bin/python bench/bench_story.py [--frames 20 --rounds 3 --steps 4 --size 64]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from drawer import load_drawer
from studio.draw import DrawJob, DrawResult
from studio.protocols import Drawer, StepCallback
from studio.settings import Settings, default_presets
from studio.stories import StoryCreate, StoryStatus


class Counting:
    """Passes jobs to the drawer and notes whether any job with references asked for the global reference."""

    def __init__(self, drawer: Drawer) -> None:
        self.drawer = drawer
        self.with_references = 0

    def draw(self, job: DrawJob, on_step: StepCallback | None = None, cancel: object = None) -> DrawResult:
        if job.global_references:
            self.with_references += 1
        return self.drawer.draw(job, on_step=on_step, cancel=cancel)  # type: ignore[arg-type]


def drawer_names_global_reference() -> bool:
    """True when the drawer package's source names the global reference mechanism (issue 13's drawer side);
    a drawer that does not ignores `mechanisms` and draws every frame plainly."""
    import drawer

    root = Path(drawer.__file__).parent
    return any("global_reference" in path.read_text(encoding="utf-8") for path in root.glob("*.py"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="refinement rounds after round 0")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from entrypoints.runtime import build_service

    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder), worker_threads=1)
        drawer = Counting(load_drawer(default_presets()["tiny"]))
        service = build_service(settings, engine=_NoTurns(), drawer=drawer)
        service.start()
        assert service.stories is not None
        request = StoryCreate(
            prompts=[f"frame {i}: a fox walks through a forest, scene {i}" for i in range(args.frames)],
            rounds=args.rounds,
            steps=args.steps,
            height=args.size,
            width=args.size,
            seed=0,
        )
        started = time.perf_counter()
        story = service.stories.submit("bench", request)
        while not (current := service.stories.store.get(story.id, with_frames=True)).status.finished:  # type: ignore[union-attr]
            time.sleep(0.05)
        wall = time.perf_counter() - started
        service.close()
    assert current is not None and current.status == StoryStatus.DONE, current
    round_zero = [frame.seconds for frame in current.rounds[0]]
    later = [frame.seconds for frames in current.rounds[1:] for frame in frames]
    print(f"platform: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    print(f"story: {args.frames} frames × (1 + {args.rounds}) rounds, {args.steps} steps, {args.size}×{args.size}")
    print(
        f"drawer implements global_reference: {'yes' if drawer_names_global_reference() else 'no'} "
        f"({drawer.with_references} jobs carried the previous round)"
    )
    print(f"frames drawn: {current.frames_done}")
    print(f"wall time: {wall:.2f} s")
    print(f"frames/second: {current.frames_done / wall:.2f}")
    print(
        f"mean s/frame round 0: {statistics.mean(round_zero):.4f}; rounds 1..{args.rounds}: "
        f"{statistics.mean(later) if later else 0.0:.4f}"
    )


class _NoTurns:
    """The benchmark runs no turns: a turn engine that is never called."""

    def run_turn(self, *args: object, **kwargs: object) -> object:
        raise AssertionError("no turns in the story benchmark")

    def forget(self, session_id: str) -> None:
        pass

    def branch(self, parent_session_id: str, turn_index: int, child_session_id: str) -> bool:
        return False


if __name__ == "__main__":
    main()
