"""Detection + segmentation time per turn with the tiny vision models on CPU, for 1, 3 and 6 subjects.

    .venv/bin/python bench/bench_vision.py [--repeats 10] [--size 512] [--threads 1]

Detection: one Grounding DINO pass with all the turn's names. Segmentation: one SAM (and SAM 2) call
with one box per subject. Locate: the whole GroundedSamLocator.locate (detect, match, segment, crop)
with thresholds at 0 so random weights still find subjects. Best and median over the repeats, after a
warm-up.
Random weights: these time the plumbing and the models' shapes, not real-model speed."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from studio.geometry import Box
from studio.protocols import LocateTarget
from vision.detector import GroundingDetector
from vision.locator import GroundedSamLocator
from vision.matching import MatchSettings
from vision.segmenter import BoxSegmenter
from vision.tiny import tiny_grounding_dino, tiny_sam, tiny_sam2

NAMES = ["girl", "boy", "dog", "cat", "man", "woman"]


def interleaved(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, tuple[float, float]]:
    """(best, median) seconds per case. Each case is warmed up twice, then the cases run in turn, one call
    each per round, so a burst of load from other processes hits all cases alike. The best is the figure
    least disturbed on a shared machine; a large gap to the median means the machine was busy."""
    for fn in cases.values():
        fn()
        fn()
    times: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(repeats):
        for key, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: (min(values), statistics.median(values)) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=512, help="square test image side")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadiest on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    detector = GroundingDetector(*tiny_grounding_dino(), box_threshold=0.0, text_threshold=0.0)
    sam = BoxSegmenter(*tiny_sam())
    sam2 = BoxSegmenter(tiny_sam2())
    locator = GroundedSamLocator(detector, sam, MatchSettings(min_iou=0.0))

    side = args.size
    print(f"tiny models, CPU, {args.threads} threads, {side}×{side} image, {args.repeats} runs: best / median (ms)")
    header = (
        f"{'subjects':>8} | {'detect':>13} | {'SAM':>13} | {'SAM 2':>13} | {'detect+SAM':>13} | {'locate':>13} | found"
    )
    print(header)
    print("-" * len(header))

    def cell(best: float, median: float) -> str:
        return f"{best * 1e3:5.1f} / {median * 1e3:5.1f}"

    cases: dict[str, Callable[[], object]] = {}
    targets_of: dict[int, list[LocateTarget]] = {}
    for n in (1, 3, 6):
        names = NAMES[:n]
        step = side / n
        boxes = [(i * step, 0.0, (i + 1) * step, float(side)) for i in range(n)]
        targets_of[n] = [
            LocateTarget(subject_id=str(i + 1), name=name, planned_box=Box(x=0, y=0, w=side, h=side))
            for i, name in enumerate(names)
        ]
        cases[f"detect{n}"] = lambda names=names: detector.detect(image, names)
        cases[f"sam{n}"] = lambda boxes=boxes: sam.segment(image, boxes)
        cases[f"sam2{n}"] = lambda boxes=boxes: sam2.segment(image, boxes)
        cases[f"locate{n}"] = lambda n=n: locator.locate(image, targets_of[n])
    t = interleaved(cases, args.repeats)
    for n in (1, 3, 6):
        found = sum(c.found for c in locator.locate(image, targets_of[n]).values())
        both = (t[f"detect{n}"][0] + t[f"sam{n}"][0], t[f"detect{n}"][1] + t[f"sam{n}"][1])
        print(
            f"{n:>8} | {cell(*t[f'detect{n}'])} | {cell(*t[f'sam{n}'])} | {cell(*t[f'sam2{n}'])} | "
            f"{cell(*both)} | {cell(*t[f'locate{n}'])} | {found}/{n}"
        )
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
