"""The region sampler with n regions against one plain generation: cost per denoising step, side by side in one run.

Cases, on the same pipeline and the same classifier-free-guided settings:

- plain: one generation of the global prompt (no mechanism: stock attention, one latent row);
- regions n: `sampler = "regions"` with n plan items in a grid of boxes (so n + 1 regions with the background),
  the first one with a reference (its IP rows in its region's pass), one bootstrapping step.

A step is the time between two consecutive step callbacks (UNet + guidance + the region blend + the scheduler
step); the first step of a run is dropped (it holds the white-latent encoding and the first allocations). Cases
are interleaved (plain, n=1, n=2, …, repeated); the median and the minimum step of each case are reported with
their ratio to plain. Two pipelines: the `tiny` preset's and the mid-size SD1.5-shaped UNet of
bench_parallel_unet.py (160/320/640 channels, 768-wide cross-attention).

Run:  .venv/bin/python bench/bench_regions.py [--size 256 --steps 4 --repeats 3 --regions 1 2 4 8]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from PIL import Image

from bench.bench_parallel_unet import build_pipeline, grid_boxes
from drawer.batches import main_batch
from drawer.conditioning import encode_references
from drawer.parallel_attention import install_parallel_attention
from drawer.region_sampler import render_regions
from drawer.render import render
from drawer.stepping import Progress
from drawer.tiny import build_tiny_sd15
from studio.draw import DrawSettings
from studio.plan import PlanItem, TurnPlan


def plan_of(n: int, size: int) -> TurnPlan:
    items = [
        PlanItem(subject_id=str(i + 1), phrase=f"subject number {i + 1}", box=box)
        for i, box in enumerate(grid_boxes(n, size, size) if n else [])
    ]
    return TurnPlan(height=size, width=size, background="a meadow", negative="blurry", items=items)


def step_times(pipe, plan: TurnPlan, settings: DrawSettings, regions: bool) -> list[float]:
    stamps: list[float] = []
    progress = Progress(settings.steps, lambda done, total: stamps.append(time.perf_counter()), None)
    embeds = encode_references(pipe, [Image.new("RGB", (64, 64), "red")])
    noise = torch.randn((1, 4, plan.height // 8, plan.width // 8), generator=torch.Generator().manual_seed(0))
    reference = {"1": 0} if plan.items else {}
    batch = main_batch(pipe, plan, settings, embeds, reference, noise, [], seed=0)
    if regions:
        render_regions(pipe, batch, plan, settings, progress, scene="")
    else:
        render(pipe, batch, progress)
    return [b - a for a, b in itertools.pairwise(stamps)]  # from the end of step 0 on


def measure(name: str, pipe, size: int, steps: int, repeats: int, counts: list[int]) -> None:
    install_parallel_attention(pipe.unet)
    plain = DrawSettings(steps=steps, seed=0, mechanisms=[], refine_step=None)
    regions = DrawSettings(
        steps=steps, seed=0, mechanisms=["regional", "subject_reference"], sampler="regions", refine_step=None
    )
    cases = {"plain": (plan_of(0, size), plain, False)}
    cases.update({f"regions n={n}": (plan_of(n, size), regions, True) for n in counts})
    timings: dict[str, list[float]] = {case: [] for case in cases}
    with torch.inference_mode():
        for plan, settings, sampler in cases.values():  # warm-up
            step_times(pipe, plan, settings, sampler)
        for _ in range(repeats):
            for case, (plan, settings, sampler) in cases.items():
                timings[case] += step_times(pipe, plan, settings, sampler)
    base_median, base_min = statistics.median(timings["plain"]), min(timings["plain"])
    print(f"\n{name}: {size}x{size}, CFG, {steps} steps per run ({steps - 1} timed), {repeats} interleaved repeats")
    print(f"{'case':<14} {'UNet rows':>9} {'median s':>9} {'ratio':>7} {'min s':>8} {'ratio':>7}")
    for case, values in timings.items():
        rows = 2 * (1 + (int(case.split("=")[1]) if "=" in case else 0))
        median, best = statistics.median(values), min(values)
        print(
            f"{case:<14} {rows:>9} {median:>9.4f} {median / base_median:>6.2f}x {best:>8.4f} {best / base_min:>6.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="canvas side of the mid-size UNet runs")
    parser.add_argument("--tiny-size", type=int, default=512, help="canvas side of the tiny preset runs")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--regions", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--skip-mid", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with open("/proc/loadavg") as load:
        print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {load.read().split()[:3]}")
    measure(
        "tiny preset", build_tiny_sd15(with_ip_adapter=True), args.tiny_size, args.steps, args.repeats, args.regions
    )
    if not args.skip_mid:
        measure("mid-size UNet", build_pipeline(), args.size, args.steps, args.repeats, args.regions)


if __name__ == "__main__":
    main()
