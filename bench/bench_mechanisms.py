"""The per-step cost of each consistency mechanism relative to plain attention, side by side in one run.

The mid-size SD1.5-shaped CPU UNet of bench_parallel_unet.py (random weights, random IP-Adapter), one
classifier-free-guided UNet step with the drawer's processors:

- plain-1 / plain-3: the processors with the layout inactive (plain text attention), 1 and 3 images;
- grca-20: plain-1 plus Story-Adapter's global reference cross-attention over 20 frames (4 tokens each);
- shared-3: plain-3 plus ConsiStory's shared attention, images 0 and 1 anchors of image 2 (subject mask a
  quarter of the canvas, dropout 0.5, after the vanilla-blending steps), with the cross-attention map
  recording that runs every step;
- anchor cache: the bytes one subject's cache holds per step (recorded on that step) and for a 30-step turn.

Timings are interleaved and reported as median and minimum with their ratios to the matching plain case.

Run:  .venv/bin/python bench/bench_mechanisms.py [--height 256 --width 256 --repeats 5 --threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers.models.attention_processor import Attention

from bench.bench_parallel_unet import CROSS, VAE_FACTOR, build_pipeline
from drawer.mechanisms.global_reference import GlobalReferenceContext
from drawer.mechanisms.shared_attention import SharedAttentionContext, SharedSetup
from drawer.parallel_attention import RegionalContext, install_parallel_attention, unet_grids
from studio.geometry import Box


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30, help="turn length for the anchor-cache total")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    unet = build_pipeline().unet.eval()
    install_parallel_attention(unet)
    gen = torch.Generator().manual_seed(1)
    side = (args.height // VAE_FACTOR, args.width // VAE_FACTOR)
    grids = unet_grids(unet, args.height, args.width, VAE_FACTOR)
    t = torch.tensor(500)

    def inactive(images: int) -> RegionalContext:
        context = RegionalContext(torch.zeros(1, 77, CROSS), [], [], num_references=1)
        context.active = False
        return context

    def inputs(images: int, references: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        latents = torch.randn(2 * images, 4, *side, generator=gen)
        text = torch.randn(2 * images, 77, CROSS, generator=gen)
        embeds = [torch.randn(2 * images, references, 32, generator=gen)]
        return latents, text, embeds

    def step(images: int, references: int, **kwargs: object):
        latents, text, embeds = inputs(images, references)
        kwargs.setdefault("layout", inactive(images))

        def run() -> None:
            unet(
                latents,
                t,
                encoder_hidden_states=text,
                added_cond_kwargs={"image_embeds": embeds},
                cross_attention_kwargs=kwargs,
            )

        return run

    names = {id(m): n for n, m in unet.named_modules() if isinstance(m, Attention)}
    subject = Box(x=args.width / 4, y=args.height / 4, w=args.width / 2, h=args.height / 2)

    def shared_context(record: bool) -> SharedAttentionContext:
        setup = SharedSetup(
            subject_tokens=[{"1": [2]}] * 3,
            anchors=[0, 1],
            mask_dropout=0.5,
            vanilla_query_steps=0.1,
            record={"1": (0, subject, "")} if record else {},
        )
        context = SharedAttentionContext(
            setup, grids, names, size=(args.height, args.width), steps=args.steps, guided=True, seed=0
        )
        maps = torch.full((3, context.record_grid.tokens, 77), 0.01)
        inside = torch.zeros(context.record_grid.height, context.record_grid.width, dtype=torch.bool)
        h, w = context.record_grid.height, context.record_grid.width
        inside[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = True
        maps[:, inside.flatten(), 2] = 0.5
        context._step_maps, context._step_count = maps, 1
        context.after_step(args.steps // 2 - 1)
        return context

    cases = {
        "plain-1": step(1, 1),
        f"grca-{args.frames}": step(
            1, 1 + args.frames, global_reference=GlobalReferenceContext(first=1, count=args.frames, scale=0.3)
        ),
        "plain-3": step(3, 1),
        "shared-3": step(3, 1, shared_attention=shared_context(record=False)),
    }
    base = {"plain-1": "plain-1", f"grca-{args.frames}": "plain-1", "plain-3": "plain-3", "shared-3": "plain-3"}
    timings: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for run in cases.values():
            run()
        for _ in range(args.repeats):
            for name, run in cases.items():
                start = time.perf_counter()
                run()
                timings[name].append(time.perf_counter() - start)
        recorder = shared_context(record=True)
        step(3, 1, shared_attention=recorder)()
    print(f"torch threads {torch.get_num_threads()}, canvas {args.width}x{args.height}, CFG, {args.repeats} repeats")
    print(f"{'case':<9} {'median s':>9} {'ratio':>7} {'min s':>8} {'ratio':>7}")
    for name, values in timings.items():
        ref = timings[base[name]]
        median, best = statistics.median(values), min(values)
        print(
            f"{name:<9} {median:>9.3f} {median / statistics.median(ref):>6.2f}x {best:>8.3f} {best / min(ref):>6.2f}x"
        )
    cache = recorder.recorded["1"]
    per_step = cache.nbytes
    print(
        f"anchor cache, one subject (box a quarter of the canvas, {unet.dtype}): {per_step / 2**20:.2f} MiB per step, "
        f"{per_step * args.steps / 2**20:.1f} MiB for {args.steps} steps ({len(cache.patches)} layers per step)"
    )


if __name__ == "__main__":
    main()
