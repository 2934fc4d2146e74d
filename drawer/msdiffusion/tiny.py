"""A random-weight MS-Diffusion adapter in the published file layout (same keys, sizes scaled down), and a tiny
SDXL-shaped pipeline carrying it, for tests and CPU benchmarks."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

from drawer.msdiffusion.resampler import DIM_HEAD, FOURIER_FREQS
from drawer.msdiffusion.weights import install_adapter
from drawer.tiny import random_perceiver_layers


def random_adapter_state_dict(
    unet: UNet2DConditionModel,
    *,
    embedding_dim: int = 32,
    phrase_dim: int = 32,
    dim: int = 64,
    depth: int = 2,
    num_queries: int = 4,
    num_dummy: int = 4,
    ff_mult: int = 4,
    seed: int = 0,
) -> dict[str, object]:
    """{"image_proj", "ms_adapter", "dummy_image_tokens"} as in `ms_adapter.bin`, random weights. `ms_adapter`
    numbers every processor of `unet.attn_processors` and holds the cross-attention (odd) ones."""
    gen = torch.Generator().manual_seed(seed)
    cross = unet.config.cross_attention_dim
    inner = DIM_HEAD * max(1, dim // DIM_HEAD)

    def rand(*shape: int, gain: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * gain / shape[-1] ** 0.5

    grounding = phrase_dim + FOURIER_FREQS * 2 * 4
    proj: dict[str, torch.Tensor] = {
        "grounding_latents": torch.randn(1, num_queries, dim, generator=gen) / dim**0.5,
        "latent_proj.0.weight": rand(2 * grounding, grounding),
        "latent_proj.0.bias": torch.zeros(2 * grounding),
        "latent_proj.2.weight": rand(num_queries * dim, 2 * grounding),
        "latent_proj.2.bias": torch.zeros(num_queries * dim),
        "latent_norm.weight": torch.ones(dim),
        "latent_norm.bias": torch.zeros(dim),
        "proj_in.weight": rand(dim, embedding_dim),
        "proj_in.bias": torch.zeros(dim),
        "attention_norm.weight": torch.ones(dim),
        "attention_norm.bias": torch.zeros(dim),
        "proj_out.weight": rand(cross, dim),
        "proj_out.bias": torch.zeros(cross),
        "norm_out.weight": torch.ones(cross),
        "norm_out.bias": torch.zeros(cross),
    }
    proj.update(random_perceiver_layers(depth, dim, inner, ff_mult, rand))
    layers: dict[str, torch.Tensor] = {}
    for k, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            hidden = unet.get_submodule(name.removesuffix(".processor")).to_q.out_features
            layers[f"{k}.to_k_ip.weight"] = rand(hidden, cross)
            layers[f"{k}.to_v_ip.weight"] = rand(hidden, cross)
    dummy = torch.randn(1, num_dummy, cross, generator=gen)
    return {"image_proj": proj, "ms_adapter": layers, "dummy_image_tokens": dummy}


def save_random_adapter(unet: UNet2DConditionModel, path: str | Path, **kwargs: object) -> Path:
    """Write a random adapter as a torch pickle, like the published `ms_adapter.bin`."""
    path = Path(path)
    torch.save(random_adapter_state_dict(unet, **kwargs), path)  # type: ignore[arg-type]
    return path


def build_tiny_msdiffusion(seed: int = 0, **kwargs: object) -> StableDiffusionXLPipeline:
    """The tiny SDXL-shaped pipeline (drawer.tiny) with no IP-Adapter and a random MS-Diffusion adapter."""
    from drawer.tiny import build_tiny_sdxl

    pipe = build_tiny_sdxl(with_ip_adapter=False)
    install_adapter(pipe, random_adapter_state_dict(pipe.unet, seed=seed, **kwargs), name="tiny adapter")  # type: ignore[arg-type]
    return pipe
