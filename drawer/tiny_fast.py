"""Tiny random-weight fast-mode models for tests and CPU development: a LoRA for a UNet in the PEFT layout
diffusers' `load_lora_weights` reads (`unet.<module>.lora_A/lora_B.weight`), and a tiny `AutoencoderTiny`
(TAESD's architecture at tiny widths, decoding 4-channel latents ×8 like the real one)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderTiny, UNet2DConditionModel

TINY_FAST_SEED = 20241114
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.2")
"""Modules an LCM-LoRA adapts inside the transformer blocks (it also adapts the resnets' convolutions;
the tiny one keeps to the attention blocks)."""


def random_lora_state_dict(
    unet: UNet2DConditionModel, rank: int = 4, scale: float = 0.2, seed: int = TINY_FAST_SEED
) -> dict[str, torch.Tensor]:
    """A random LoRA (rank `rank`) over the UNet's attention blocks, in the PEFT/diffusers layout. Weights are
    built on the CPU in float32 from a fixed seed, so two builds are equal."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, module in unet.named_modules():
        if ".processor" in name or not name.endswith(LORA_TARGETS) or ".attentions." not in f".{name}":
            continue
        if isinstance(module, torch.nn.Linear):
            a = torch.randn(rank, module.in_features, generator=generator) * scale
            b = torch.randn(module.out_features, rank, generator=generator) * scale
        elif isinstance(module, torch.nn.Conv2d) and module.kernel_size == (1, 1):
            a = torch.randn(rank, module.in_channels, 1, 1, generator=generator) * scale
            b = torch.randn(module.out_channels, rank, 1, 1, generator=generator) * scale
        else:
            continue
        state[f"unet.{name}.lora_A.weight"] = a
        state[f"unet.{name}.lora_B.weight"] = b
    return state


def tiny_autoencoder_tiny(seed: int = TINY_FAST_SEED) -> AutoencoderTiny:
    """TAESD's architecture (3 upsamplings: latents ×8) at tiny widths, random weights."""
    torch.manual_seed(seed)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
