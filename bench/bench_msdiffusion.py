"""The cost of an MS-Diffusion step relative to a plain SDXL step with IP-Adapter, side by side in one run.

Two SDXL-shaped CPU UNets with random weights: the tiny one of drawer/tiny.py (at a 512² canvas) and a
mid-size one (3 levels, 64/128/256 channels, transformer depth 1/2/4, 512-wide cross-attention, 64-wide heads,
at a 512² canvas). One classifier-free-guided UNet call (batch 2) per step, for 1, 2 and 4 subjects:

- ip-adapter: diffusers' own IPAdapterAttnProcessor2_0 with a plain IP-Adapter (4 tokens per image, its
  linear projection run in the step as the stock pipeline does), the n references as n images under one
  softmax: the cheapest stock way to condition on n references;
- ip-adapter+masks: the same with `ip_adapter_masks` (one box mask per image: the stock equivalent of
  per-subject boxes; diffusers loops over the images);
- msdiffusion: the drawer's MS-Diffusion processors (drawer.msdiffusion) with n subjects of 16 tokens plus
  4 dummies, boxes on a grid, the published default (no auto layout);
- msdiffusion+auto: the same with the auto layout recording every layer's phrase attention map (after
  start_step).

Timings are interleaved (each round runs every case once), reported as median and minimum in ms with the ratio
of msdiffusion to ip-adapter. Goal: ≤ 1.2× at 4 subjects.

Run:  .venv/bin/python bench/bench_msdiffusion.py [--repeats 5 --threads 2 --sizes tiny,mid]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from diffusers import UNet2DConditionModel

from bench.bench_parallel_unet import grid_boxes
from drawer.msdiffusion.context import MSDiffusionContext
from drawer.msdiffusion.tiny import random_adapter_state_dict
from drawer.msdiffusion.weights import install_processors
from drawer.parallel_attention import unet_grids
from drawer.tiny import random_ip_adapter_state_dict, tiny_sdxl_unet

VAE_FACTOR = 8
COUNTS = (1, 2, 4)


def mid_sdxl_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        block_out_channels=(64, 128, 256),
        layers_per_block=2,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=512,
        addition_embed_type="text_time",
        addition_time_embed_dim=32,
        projection_class_embeddings_input_dim=256 + 6 * 32,
        use_linear_projection=True,
        attention_head_dim=(1, 2, 4),
        transformer_layers_per_block=(1, 2, 4),
        norm_num_groups=32,
    )


SIZES: dict[str, tuple[Callable[[], UNet2DConditionModel], int, int]] = {
    "tiny": (tiny_sdxl_unet, 512, 32),  # factory, canvas side, pooled text width
    "mid": (mid_sdxl_unet, 512, 256),
}


def subject_masks(n: int, side: int) -> torch.Tensor:
    masks = torch.zeros(1, n, side, side)
    for i, box in enumerate(grid_boxes(n, side, side)):
        x0, y0, x1, y1 = (int(v) for v in box.to_xyxy())
        masks[0, i, y0:y1, x0:x1] = 1.0
    return masks


def build_cases(size: str, n: int, gen: torch.Generator) -> dict[str, Callable[[], None]]:
    factory, side, pooled = SIZES[size]
    torch.manual_seed(0)
    ip_unet = factory().eval()
    ms_unet = factory().eval()
    ms_unet.load_state_dict(ip_unet.state_dict())
    ip_unet._load_ip_adapter_weights([random_ip_adapter_state_dict(ip_unet, image_embed_dim=32)])
    install_processors(ms_unet, random_adapter_state_dict(ms_unet)["ms_adapter"])
    cross = ip_unet.config.cross_attention_dim
    latent = side // VAE_FACTOR
    latents = torch.randn(2, 4, latent, latent, generator=gen)
    text = torch.randn(2, 77, cross, generator=gen)
    added = {"text_embeds": torch.randn(2, pooled, generator=gen), "time_ids": torch.randn(2, 6, generator=gen)}
    image_embeds = [torch.randn(2, n, 32, generator=gen)]
    t = torch.tensor(500)
    boxes = [box.normalized(side, side) for box in grid_boxes(n, side, side)]
    grids = unet_grids(ms_unet, side, side, VAE_FACTOR)

    def context(auto: bool) -> MSDiffusionContext:
        ctx = MSDiffusionContext(
            torch.randn(4 + 16 * n, cross, generator=gen),
            num_dummy=4,
            num_queries=16,
            boxes=boxes,
            grids=grids,
            mask_threshold=0.5 if auto else None,
            start_step=1,
            phrase_tokens=[[2 + i] for i in range(n)],
        )
        ctx.after_step(4)  # past start_step: the auto layout uses (and keeps recording) attention masks
        return ctx

    plain_ctx, auto_ctx = context(False), context(True)
    masks = [subject_masks(n, side)]

    def ip() -> None:
        ip_unet(latents, t, text, added_cond_kwargs={**added, "image_embeds": image_embeds})

    def ip_masked() -> None:
        ip_unet(
            latents,
            t,
            text,
            added_cond_kwargs={**added, "image_embeds": image_embeds},
            cross_attention_kwargs={"ip_adapter_masks": masks},
        )

    def ms(ctx: MSDiffusionContext) -> Callable[[], None]:
        return lambda: ms_unet(latents, t, text, added_cond_kwargs=added, cross_attention_kwargs={"msdiffusion": ctx})

    for processor in ip_unet.attn_processors.values():
        if hasattr(processor, "scale"):
            processor.scale = [0.6]
    return {
        "ip-adapter": ip,
        "ip-adapter+masks": ip_masked,
        "msdiffusion": ms(plain_ctx),
        "msdiffusion+auto": ms(auto_ctx),
    }


@torch.no_grad()
def measure(cases: dict[str, Callable[[], None]], repeats: int) -> dict[str, list[float]]:
    for fn in cases.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sizes", default="tiny,mid")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print("| UNet | subjects | case | median ms | min ms | × ip-adapter (median) | × ip-adapter (min) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        for n in COUNTS:
            times = measure(build_cases(size, n, gen), args.repeats)
            base_med, base_min = statistics.median(times["ip-adapter"]), min(times["ip-adapter"])
            for name, values in times.items():
                med, low = statistics.median(values), min(values)
                print(
                    f"| {size} | {n} | {name} | {med * 1000:.1f} | {low * 1000:.1f} | "
                    f"{med / base_med:.2f} | {low / base_min:.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
