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

`--flops` adds a load-independent figure at the real SDXL shapes (1024², 70 cross-attention layers, 2048-wide
cross-attention), built on the meta device (no weights, no memory): matmul/conv FLOPs of one guided step
(torch.utils.flop_counter) with IP-Adapter-Plus (16 tokens per reference, projection excluded) against
MS-Diffusion (4 + 16 n tokens; resampler excluded: it runs once per turn), without and with auto layout.

Run:  .venv/bin/python bench/bench_msdiffusion.py [--repeats 5 --threads 2 --sizes tiny,mid --flops]
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


def sdxl_unet() -> UNet2DConditionModel:
    """SDXL base's UNet configuration (for the FLOP count on the meta device)."""
    return UNet2DConditionModel(
        sample_size=128,
        block_out_channels=(320, 640, 1280),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10),
        attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        use_linear_projection=True,
    )


def sdxl_flops(side: int = 1024) -> None:
    """Matmul/conv FLOPs of one guided SDXL step: IP-Adapter-Plus vs MS-Diffusion, 1/2/4 references."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import MultiIPAdapterImageProjection
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        ip_unet, ms_unet = sdxl_unet(), sdxl_unet()
        processors: dict[str, object] = {}
        layers: dict[str, torch.Tensor] = {}
        for k, name in enumerate(ip_unet.attn_processors):
            hidden = ip_unet.get_submodule(name.removesuffix(".processor")).to_q.out_features
            if name.endswith("attn2.processor"):
                processors[name] = IPAdapterAttnProcessor2_0(hidden, 2048, num_tokens=(16,), scale=[0.6])
                layers[f"{k}.to_k_ip.weight"] = torch.empty(hidden, 2048)
                layers[f"{k}.to_v_ip.weight"] = torch.empty(hidden, 2048)
            else:
                processors[name] = ip_unet.attn_processors[name]
        ip_unet.set_attn_processor(processors)
        ip_unet.encoder_hid_proj = MultiIPAdapterImageProjection([torch.nn.Identity()])
        ip_unet.config.encoder_hid_dim_type = "ip_image_proj"
        install_processors(ms_unet, layers)
        latent = side // VAE_FACTOR
        latents, text = torch.empty(2, 4, latent, latent), torch.empty(2, 77, 2048)
        added = {"text_embeds": torch.empty(2, 1280), "time_ids": torch.empty(2, 6)}
        t = torch.tensor(500)
        grids = unet_grids(ms_unet, side, side, VAE_FACTOR)
        print(f"\nFLOPs of one guided step at SDXL shapes, {side}² (meta device; matmuls and convolutions)")
        print("| subjects | IP-Adapter-Plus TFLOP | msdiffusion TFLOP | × | msdiffusion+auto TFLOP | × |")
        print("|---|---|---|---|---|---|")
        for n in COUNTS:
            counts = []
            for auto in (None, False, True):
                counter = FlopCounterMode(display=False)
                with counter:
                    if auto is None:
                        image_embeds = [torch.empty(2, 16 * n, 2048)]
                        ip_unet(latents, t, text, added_cond_kwargs={**added, "image_embeds": image_embeds})
                    else:
                        context = MSDiffusionContext(
                            torch.empty(4 + 16 * n, 2048),
                            num_dummy=4,
                            num_queries=16,
                            boxes=[box.normalized(side, side) for box in grid_boxes(n, side, side)],
                            grids=grids,
                            mask_threshold=0.5 if auto else None,
                            start_step=0,
                            phrase_tokens=[[2 + i] for i in range(n)],
                        )
                        kwargs = {"msdiffusion": context}
                        ms_unet(latents, t, text, added_cond_kwargs=added, cross_attention_kwargs=kwargs)
                counts.append(counter.get_total_flops() / 1e12)
            base, ms, auto_ms = counts
            print(f"| {n} | {base:.3f} | {ms:.3f} | {ms / base:.3f} | {auto_ms:.3f} | {auto_ms / base:.3f} |")


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
    parser.add_argument("--flops", action="store_true", help="also count FLOPs at real SDXL shapes (meta device)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")
    print("| UNet | subjects | case | median ms | min ms | × ip-adapter (median) | × ip-adapter (min) |")
    print("|---|---|---|---|---|---|---|")
    for size in [s for s in args.sizes.split(",") if s]:
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
    if args.flops:
        sdxl_flops()


if __name__ == "__main__":
    main()
