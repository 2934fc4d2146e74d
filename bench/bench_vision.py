"""Detection + segmentation time per turn with the tiny vision models on CPU, for 1, 3 and 6 subjects.

    .venv/bin/python bench/bench_vision.py [--repeats 10] [--size 512] [--threads 2]

Detection: one Grounding DINO pass with all the turn's names. Segmentation: one SAM (and SAM 2) call
with one box per subject. Locate: the whole GroundedSamLocator.locate (detect, match, segment, crop)
with thresholds at 0 so random weights still find subjects. Medians over the repeats, after a warm-up.
Random weights: these time the plumbing and the models' shapes, not real-model speed."""

from __future__ import annotations

import argparse
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


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--size", type=int, default=512, help="square test image side")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    detector = GroundingDetector(*tiny_grounding_dino(), box_threshold=0.0, text_threshold=0.0)
    sam = BoxSegmenter(*tiny_sam())
    sam2 = BoxSegmenter(tiny_sam2())
    locator = GroundedSamLocator(detector, sam, MatchSettings(min_iou=0.0))

    side = args.size
    print(f"tiny models, CPU, {args.threads} threads, {side}×{side} image, median of {args.repeats} (ms)")
    header = f"{'subjects':>8} | {'detect':>7} | {'SAM':>7} | {'SAM 2':>7} | {'detect+SAM':>10} | {'locate':>7} | found"
    print(header)
    print("-" * len(header))
    for n in (1, 3, 6):
        names = NAMES[:n]
        step = side / n
        boxes = [(i * step, 0.0, (i + 1) * step, float(side)) for i in range(n)]
        targets = [
            LocateTarget(subject_id=str(i + 1), name=name, planned_box=Box(x=0, y=0, w=side, h=side))
            for i, name in enumerate(names)
        ]
        t_det = median_seconds(lambda names=names: detector.detect(image, names), args.repeats)
        t_sam = median_seconds(lambda boxes=boxes: sam.segment(image, boxes), args.repeats)
        t_sam2 = median_seconds(lambda boxes=boxes: sam2.segment(image, boxes), args.repeats)
        t_loc = median_seconds(lambda targets=targets: locator.locate(image, targets), args.repeats)
        found = sum(c.found for c in locator.locate(image, targets).values())
        print(
            f"{n:>8} | {t_det * 1e3:7.1f} | {t_sam * 1e3:7.1f} | {t_sam2 * 1e3:7.1f} | "
            f"{(t_det + t_sam) * 1e3:10.1f} | {t_loc * 1e3:7.1f} | {found}/{n}"
        )


if __name__ == "__main__":
    main()
