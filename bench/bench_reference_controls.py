"""What the reference controls cost per turn, side by side in one run (docs/reference_controls.md).

Whole draws with the `tiny` preset (random weights; subject init off so only the denoising differs), two
referenced subjects, interleaved repeats, median and minimum with their ratio to the default draw:

- default: one reference per subject, no control set (installs nothing: the pre-controls path);
- window+scale: subject 1 at `reference_scale` 0.5 inside `reference_window` [0.2, 0.8) (the step listener
  rewrites the image rows' weights before every step);
- tokens-3: subject 1 with three references combined as `tokens` (its row reads 3× the tokens);
- average-3: the same three references averaged into one slot (one more image to encode);
- style: plus a global style reference at scale 0.5 (one whole-canvas IP branch per cross-attention layer).

Run:  .venv/bin/python bench/bench_reference_controls.py [--size 512 --steps 10 --repeats 5 --threads 1]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import torch
from PIL import Image

from drawer import load_drawer
from studio.draw import DrawJob, DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.settings import default_presets


def _png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    drawer = load_drawer(default_presets()["tiny"])
    side = args.size
    items = [
        PlanItem(subject_id="1", phrase="a girl", box=Box(x=0, y=side / 8, w=side / 2, h=side * 3 / 4)),
        PlanItem(subject_id="2", phrase="a dog", box=Box(x=side / 2, y=side / 4, w=side / 2, h=side / 2)),
    ]
    settings = DrawSettings(steps=args.steps, seed=1, mechanisms=["regional", "subject_reference"], refine_step=None)
    refs = {"1": _png("red"), "2": _png("blue")}
    more = {"1": [_png("navy"), _png("green")]}

    def plan(**controls: object) -> TurnPlan:
        first = items[0].model_copy(update=controls)
        return TurnPlan(height=side, width=side, background="a park", items=[first, items[1]])

    styled = settings.model_copy(update={"style_reference": settings.style_reference.model_copy(update={"scale": 0.5})})
    cases = {
        "default": DrawJob(plan=plan(), references=refs, settings=settings),
        "window+scale": DrawJob(
            plan=plan(reference_scale=0.5, reference_window=(0.2, 0.8)), references=refs, settings=settings
        ),
        "tokens-3": DrawJob(
            plan=plan(reference_combine="tokens"), references=refs, more_references=more, settings=settings
        ),
        "average-3": DrawJob(plan=plan(), references=refs, more_references=more, settings=settings),
        "style": DrawJob(plan=plan(), references=refs, settings=styled, style_reference=_png("yellow")),
    }
    for job in cases.values():  # warm-up
        drawer.draw(job)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, job in cases.items():
            start = time.perf_counter()
            drawer.draw(job)
            times[name].append(time.perf_counter() - start)
    base_med, base_min = statistics.median(times["default"]), min(times["default"])
    print(
        f"tiny preset, {side}x{side}, {args.steps} steps, 2 subjects, {args.repeats} repeats, {args.threads} thread(s)"
    )
    print(f"{'case':<14}{'median s':>10}{'min s':>9}{'x median':>10}{'x min':>8}")
    for name, values in times.items():
        med, low = statistics.median(values), min(values)
        print(f"{name:<14}{med:>10.3f}{low:>9.3f}{med / base_med:>10.2f}{low / base_min:>8.2f}")


if __name__ == "__main__":
    main()
