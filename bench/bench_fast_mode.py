"""Fast mode (4 steps, few-step LoRA, no CFG) against normal mode (30 steps, CFG 7.5) per turn, side by side in
one run, and the cost of a live preview relative to one fast step.

Two drawers, random weights:
- tiny: the `tiny` preset (its random LCM-LoRA and tiny AutoencoderTiny);
- mid: bench_parallel_unet's mid-size SD1.5-shaped UNet (160/320/640 channels, 768-wide cross-attention) with
  a random rank-64 LoRA on its attention blocks, and a TAESD-shaped AutoencoderTiny (64 channels, diffusers'
  default config) for the previews, so the preview cost is the real decoder's.

Each turn is a whole `Drawer.draw` of a two-subject plan with a reference image and the default mechanisms
(regional, subject_reference, subject_init: normal mode pre-renders 15 steps, fast mode 2). Turns are
interleaved (normal, fast, fast with previews, …) `--repeats` times; medians and minima are printed with the
ratios. The preview cost is the time spent in the preview observer (decode + JPEG) per preview, against the
mean fast step (the time between step callbacks, previews excluded).

Run:  .venv/bin/python bench/bench_fast_mode.py [--size 256 --repeats 3 --threads 1 --clock cpu]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time

import torch
from diffusers import AutoencoderTiny
from PIL import Image

from bench.bench_parallel_unet import mid_unet
from drawer import Drawer, load_drawer
from drawer.previews import PreviewObserver
from drawer.tiny import build_tiny_sd15
from drawer.tiny_fast import random_lora_state_dict
from studio.draw import DrawJob, DrawSettings
from studio.fast_mode import PreviewImage, StepReporter
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.settings import FastModeWeights, ModelPreset, default_presets

CLOCK = [time.perf_counter]
"""The clock every figure uses: wall time, or with --clock cpu the process's CPU time (steadier on a shared
machine; use with --threads 1)."""


STAGES: dict[str, list[dict[str, float]]] = {}
"""Wall seconds per drawer stage (DrawResult.timings) of every turn, by mode."""


def plan(size: int) -> TurnPlan:
    half = size / 2
    return TurnPlan(
        height=size,
        width=size,
        background="a park",
        items=[
            PlanItem(subject_id="1", phrase="a girl with a red scarf", box=Box(x=4, y=8, w=half - 8, h=size - 16)),
            PlanItem(subject_id="2", phrase="a brown dog", box=Box(x=half + 4, y=size / 3, w=half - 8, h=size / 2)),
        ],
    )


def reference() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 64), "red").save(buffer, format="PNG")
    return buffer.getvalue()


def mid_drawer() -> Drawer:
    pipe = build_tiny_sd15(seed=0, unet_factory=mid_unet)
    preset = ModelPreset(
        kind="tiny", dtype="float32", device="cpu", max_side=1024, fast=FastModeWeights(lora="tiny"), tiny_vae="tiny"
    )
    drawer = Drawer(pipe, preset)
    # a rank-64 LoRA like LCM-LoRA's, and the real TAESD's shape for the previews
    pipe.load_lora_weights(random_lora_state_dict(pipe.unet, rank=64, scale=0.02), adapter_name="fast")
    pipe.set_adapters(["fast"])
    pipe.disable_lora()
    drawer.fast_mode._loaded = True
    from drawer.fast_mode import fast_scheduler

    drawer.fast_mode._scheduler = fast_scheduler("lcm", dict(pipe.scheduler.config))
    torch.manual_seed(0)
    drawer.preview_decoder._model = AutoencoderTiny().eval()
    return drawer


class Timed:
    """Step timestamps and the time spent in preview observers during one draw."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.preview_seconds: list[float] = []
        self.previews: list[PreviewImage] = []

    def reporter(self) -> StepReporter:
        return StepReporter(lambda s, t: self.stamps.append(CLOCK[0]()), self.previews.append)

    def step_seconds(self, last: int) -> float:
        """Mean time between the last `last` step callbacks, previews excluded."""
        stamps = self.stamps[-(last + 1) :]
        span = stamps[-1] - stamps[0]
        return (span - sum(self.preview_seconds[1:])) / (len(stamps) - 1)


def run(drawer: Drawer, size: int, settings: DrawSettings, timed: Timed | None = None) -> float:
    job = DrawJob(plan=plan(size), references={"1": reference()}, settings=settings)
    start = CLOCK[0]()
    result = drawer.draw(job, on_step=timed.reporter() if timed else None)
    STAGES.setdefault(settings.mode, []).append(result.timings)
    return CLOCK[0]() - start


def bench(name: str, drawer: Drawer, size: int, repeats: int) -> None:
    normal = DrawSettings(seed=1)
    fast = DrawSettings(mode="fast", seed=1, previews=False)
    previews = DrawSettings(mode="fast", seed=1)
    real_call = PreviewObserver.__call__
    current: list[Timed] = []

    def timed_call(self: PreviewObserver, step: int, latents: torch.Tensor) -> None:
        start = CLOCK[0]()
        real_call(self, step, latents)
        current[-1].preview_seconds.append(CLOCK[0]() - start)

    PreviewObserver.__call__ = timed_call  # type: ignore[method-assign]
    run(drawer, size, fast)  # warm-up: loads the LoRA, builds the schedulers
    run(drawer, size, DrawSettings(seed=1, steps=2))
    times: dict[str, list[float]] = {"normal (30 steps)": [], "fast (4 steps)": [], "fast + previews": []}
    step_s: list[float] = []
    preview_s: list[float] = []
    sizes: list[int] = []
    try:
        for _ in range(repeats):
            times["normal (30 steps)"].append(run(drawer, size, normal))
            times["fast (4 steps)"].append(run(drawer, size, fast))
            current.append(Timed())
            times["fast + previews"].append(run(drawer, size, previews, current[-1]))
            step_s.append(current[-1].step_seconds(4))
            preview_s.extend(current[-1].preview_seconds)
            sizes.extend(len(p.data) for p in current[-1].previews)
    finally:
        PreviewObserver.__call__ = real_call  # type: ignore[method-assign]
    base = statistics.median(times["normal (30 steps)"])
    base_min = min(times["normal (30 steps)"])
    print(f"\n{name} ({size}x{size}, {repeats} repeats)")
    print(f"{'case':<20}{'median s':>10}{'min s':>10}{'x faster (median)':>20}{'x faster (min)':>16}")
    for case, values in times.items():
        med, low = statistics.median(values), min(values)
        print(f"{case:<20}{med:>10.3f}{low:>10.3f}{base / med:>20.2f}{base_min / low:>16.2f}")
    for mode, runs in STAGES.items():
        names = sorted({name for run_ in runs for name in run_})
        stages = ", ".join(f"{name} {statistics.median(r.get(name, 0.0) for r in runs):.3f}" for name in names)
        print(f"{mode} stages (wall s, median): {stages}")
    STAGES.clear()
    step, preview = statistics.median(step_s), statistics.median(preview_s)
    print(
        f"fast step {step * 1000:.1f} ms; preview (decode + JPEG) {preview * 1000:.1f} ms = "
        f"{100 * preview / step:.1f} % of a step; preview size {min(sizes)}-{max(sizes)} bytes"
    )


def real_shape_preview(repeats: int) -> None:
    """A preview (TAESD-shaped decoder, 512² canvas → 256-pixel preview) against one unguided step of an
    SD1.5-shaped UNet at its real size (random weights, diffusers' default UNet config with 768-wide
    cross-attention), side by side: what the ≤ 10 % goal is about."""
    from diffusers import UNet2DConditionModel

    from drawer.previews import PreviewDecoder, encode_preview

    torch.manual_seed(0)
    unet = UNet2DConditionModel(cross_attention_dim=768).eval()
    decoder = PreviewDecoder(ModelPreset(kind="tiny", tiny_vae="tiny"))
    decoder._model = AutoencoderTiny().eval()
    latents = torch.randn(1, 4, 64, 64)
    text = torch.randn(1, 77, 768)
    steps, previews = [], []
    with torch.no_grad():
        unet(latents, torch.tensor([500]), text)
        for _ in range(repeats):
            start = CLOCK[0]()
            unet(latents, torch.tensor([500]), text)
            steps.append(CLOCK[0]() - start)
            start = CLOCK[0]()
            encode_preview(decoder.decode(latents, 256), "jpeg")
            previews.append(CLOCK[0]() - start)
    step, preview = statistics.median(steps), statistics.median(previews)
    print(
        f"\nSD1.5-shaped UNet step at 512² (batch 1, no CFG) {step:.3f} s; preview 256 px {preview * 1000:.1f} ms "
        f"= {100 * preview / step:.1f} % of a step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="canvas side of the mid-size turns")
    parser.add_argument("--tiny-size", type=int, default=512, help="canvas side of the tiny turns")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", choices=["tiny", "mid", "real"], default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK[0] = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, "
        f"clock {args.clock}"
    )
    if args.only in (None, "tiny"):
        bench("tiny preset", load_drawer(default_presets()["tiny"]), args.tiny_size, args.repeats)
    if args.only in (None, "mid"):
        bench("mid-size UNet", mid_drawer(), args.size, args.repeats)
    if args.only in (None, "real"):
        real_shape_preview(args.repeats)


if __name__ == "__main__":
    main()
