"""Memory of one subject's ConsiStory anchor cache, and what the size bound keeps (docs/mechanisms.md).

1. Measured: a turn on each tiny preset (real Drawer, one subject whose box is a quarter of the canvas) records
   the cache; printed: its bytes per recorded step and in all, the stored blob (safetensors), the base64 JSON a
   Celery job carries, the blob's write/read time, and what the default bound keeps.
2. Computed (no weights exist here): the same cache for full-size SD1.5 at 512² and SDXL at 1024², fp16, from
   their UNets' up-block self-attention layers (channels × patch count × 2 guidance halves), for a subject mask
   filling its box (upper bound) and half of it; and what the default bound keeps of a 30-step turn.

Run:  .venv/bin/python bench/bench_anchor_cache.py [--size 256 --steps 10]
"""

from __future__ import annotations

import argparse
import base64
import time

import torch

from drawer import load_drawer
from drawer.mechanisms.anchor_cache import MIN_STEPS, AnchorCache
from studio.draw import DEFAULT_ANCHOR_CACHE_MIB, DrawJob, DrawSettings, SharedAttentionSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.settings import default_presets

MIB = 2**20

FULL_SIZE = {
    # up-block self-attention layers: (grid side as a fraction of the latent side, channels, layers)
    "SD1.5 512²": (64, [(1 / 4, 1280, 3), (1 / 2, 640, 3), (1, 320, 3)]),
    "SDXL 1024²": (128, [(1 / 4, 1280, 30), (1 / 2, 640, 6)]),
}
"""SD1.5: up blocks 1-3 carry 3 transformer blocks of depth 1 each at 1/4, 1/2, 1 of the latent side. SDXL: up
block 0 carries 3 of depth 10 at 1/4, up block 1 3 of depth 2 at 1/2, up block 2 none."""


def kept_by_bound(per_step: float, steps: int, max_bytes: float) -> str:
    """What AnchorCache.trimmed keeps of a `steps`-step cache of `per_step` bytes a step (steps 1.. recorded)."""
    held = steps - 1
    if per_step * held <= max_bytes:
        return f"all {held} steps"
    fits = int(max_bytes // per_step)
    if fits >= min(MIN_STEPS, held):
        return f"{fits} of {held} steps"
    floor = min(MIN_STEPS, held)
    stride = -(-per_step * floor // max_bytes)
    return f"{floor} steps, every {int(stride)}th patch"


def measured(preset: str, size: int, steps: int) -> None:
    drawer = load_drawer(default_presets()[preset])
    box = Box(x=size / 4, y=size / 4, w=size / 2, h=size / 2)
    plan = TurnPlan(
        height=size, width=size, background="a park", items=[PlanItem(subject_id="1", phrase="a girl", box=box)]
    )
    unbounded = SharedAttentionSettings(anchor_cache_mib=256)
    mechanisms = ["regional", "shared_attention"]
    settings = DrawSettings(steps=steps, seed=1, mechanisms=mechanisms, shared_attention=unbounded)
    blob = drawer.draw(DrawJob(plan=plan, settings=settings, anchor_caches={})).anchor_caches["1"]
    started = time.perf_counter()
    cache = AnchorCache.from_bytes(blob)
    read = time.perf_counter() - started
    started = time.perf_counter()
    cache.to_bytes()
    write = time.perf_counter() - started
    recorded = len(cache.recorded_steps())
    print(
        f"{preset:<10} {size}², {steps} steps, {drawer.pipe.unet.dtype}: "
        f"{cache.nbytes / recorded / MIB:.3f} MiB a step, "
        f"{cache.nbytes / MIB:.2f} MiB in all ({recorded} steps × {len(cache.patches) // recorded} layers); blob "
        f"{len(blob) / MIB:.2f} MiB, base64 in a job {len(base64.b64encode(blob)) / MIB:.2f} MiB; "
        f"write {write * 1e3:.1f} ms, read {read * 1e3:.1f} ms"
    )


def computed(max_bytes: float) -> None:
    for name, (latent, layers) in FULL_SIZE.items():
        for fill in (1.0, 0.5):
            elements = sum((latent * side) ** 2 / 4 * fill * channels * count for side, channels, count in layers)
            per_step = elements * 2 * 2  # two guidance halves, fp16
            print(
                f"{name:<11} fp16, mask {fill:.0%} of a quarter-canvas box: {per_step / MIB:6.1f} MiB a step, "
                f"{per_step * 29 / MIB:7.1f} MiB for a 30-step turn; the default {max_bytes / MIB:.0f} MiB bound "
                f"keeps {kept_by_bound(per_step, 30, max_bytes)}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for preset in ("tiny", "tiny-sdxl"):
        measured(preset, args.size, args.steps)
    computed(DEFAULT_ANCHOR_CACHE_MIB * MIB)


if __name__ == "__main__":
    main()
