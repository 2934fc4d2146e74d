"""Parallel-UNet step vs plain UNet step, measured side by side in one run.

A mid-size SD1.5-shaped UNet with random weights (3 levels, 160/320/640 channels, 768-wide cross-attention)
runs one classifier-free-guided denoising step (batch 2):

- plain: diffusers' stock processors, the global prompt only;
- parallel n: the drawer's processors, n subjects in a grid of boxes, each with its own phrase row and its own
  IP-Adapter reference (random IP-Adapter weights loaded through diffusers' `load_ip_adapter`).

Both UNets hold the same weights. Timings are interleaved (plain, n=1, n=2, …, repeated); the median and the
minimum of each case are reported with their ratios to plain (the minimum is the less noisy on a shared CPU).

Run:  .venv/bin/python bench/bench_parallel_unet.py [--height 512 --width 512 --repeats 7]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from diffusers import StableDiffusionPipeline, UNet2DConditionModel

from drawer.parallel_attention import RegionImage, build_regional_context, install_parallel_attention, unet_grids
from drawer.tiny import build_tiny_sd15
from studio.geometry import Box

CROSS = 768
VAE_FACTOR = 8


def mid_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(160, 320, 640),
        layers_per_block=1,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def build_pipeline(with_ip_adapter: bool = True) -> StableDiffusionPipeline:
    return build_tiny_sd15(with_ip_adapter=with_ip_adapter, seed=0, unet_factory=mid_unet)


def grid_boxes(n: int, height: int, width: int) -> list[Box]:
    cols = 1 if n == 1 else 2
    rows = (n + cols - 1) // cols
    w, h = width / cols, height / rows
    return [Box(x=(i % cols) * w + 4, y=(i // cols) * h + 4, w=w - 8, h=h - 8) for i in range(n)]


def seconds(fn, clock) -> list[float]:
    start = clock()
    fn()
    return [clock() - start]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--subjects", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: process CPU time, steadier than wall time on a shared machine (use with --threads 1)",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    # Two UNets with the same weights: one keeps diffusers' stock processors, one gets the drawer's.
    plain_unet = build_pipeline(with_ip_adapter=False).unet.eval()
    unet = build_pipeline().unet.eval()
    install_parallel_attention(unet)
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, args.height // VAE_FACTOR, args.width // VAE_FACTOR, generator=gen)
    text = torch.randn(2, 77, CROSS, generator=gen)
    t = torch.tensor(500)

    def plain_step() -> None:
        plain_unet(latents, t, encoder_hidden_states=text)

    cases = {"plain": plain_step}
    for n in args.subjects:
        region = torch.randn(n + 1, 77, CROSS, generator=gen)
        image_embeds = [torch.randn(2, n, 32, generator=gen)]
        context = build_regional_context(
            [RegionImage(grid_boxes(n, args.height, args.width), 0, list(range(1, n + 1)), list(range(n)))],
            region,
            height=args.height,
            width=args.width,
            grids=unet_grids(unet, args.height, args.width, VAE_FACTOR),
            fuse_scale=(1.2, 0.0),
            global_weight=0.3,
            img_scale=0.7,
            guided=True,
            num_references=n,
        )

        def step(context=context, image_embeds=image_embeds) -> None:
            unet(
                latents,
                t,
                encoder_hidden_states=text,
                added_cond_kwargs={"image_embeds": image_embeds},
                cross_attention_kwargs={"layout": context},
            )

        cases[f"n={n}"] = step

    timings: dict[str, list[float]] = {name: [] for name in cases}
    with torch.inference_mode():
        for step in cases.values():  # warm-up
            step()
        for _ in range(args.repeats):
            for name, step in cases.items():
                timings[name] += seconds(step, clock)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
            cpu = names[0] if names else cpu
    except OSError:
        pass
    device = f"CPU {cpu}, torch threads {torch.get_num_threads()}, torch {torch.__version__}"
    print(f"device: {device}")
    print(
        f"canvas {args.width}x{args.height}, latent {latents.shape[-1]}x{latents.shape[-2]}, CFG batch 2, "
        f"{args.repeats} interleaved repeats, {args.clock} clock"
    )
    base_median = statistics.median(timings["plain"])
    base_min = min(timings["plain"])
    print(f"{'case':<8} {'median s':>9} {'ratio':>7} {'min s':>8} {'ratio':>7}")
    for name, values in timings.items():
        median, best = statistics.median(values), min(values)
        print(f"{name:<8} {median:>9.3f} {median / base_median:>6.2f}x {best:>8.3f} {best / base_min:>6.2f}x")


if __name__ == "__main__":
    main()
