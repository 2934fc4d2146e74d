"""Tiny random-weight SD1.5- and SDXL-shaped pipelines for tests and CPU development.

Everything is built from small configs, offline, with a fixed torch seed, so two builds give the same weights.
The pipelines carry a CLIP image encoder and random IP-Adapter weights loaded through diffusers' own
`load_ip_adapter`, so the IP-Adapter code path is exercised exactly as with real weights.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

TINY_SEED = 20240601
_TEXT_HIDDEN = 32
_IMAGE_EMBED = 32
_BOS_ID = 512
_EOS_ID = 513


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0…255 (GPT-2's mapping)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars: dict[int, int] = {b: b for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


@lru_cache(maxsize=1)
def _tokenizer_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="studio-tiny-tokenizer-"))
    chars = _byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def tiny_tokenizer() -> CLIPTokenizer:
    """An offline byte-level CLIP tokenizer (514 tokens, no merges), 77 positions."""
    folder = _tokenizer_dir()
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_config(hidden: int = _TEXT_HIDDEN) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=514,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=hidden,
        bos_token_id=_BOS_ID,
        eos_token_id=_EOS_ID,
        pad_token_id=_EOS_ID,
    )


def tiny_vae() -> AutoencoderKL:
    """AutoencoderKL with the real one's shape (4 levels, so factor 8; mid-block attention) at tiny widths."""
    return AutoencoderKL(
        block_out_channels=(4, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
    )


def _image_encoder() -> tuple[CLIPVisionModelWithProjection, CLIPImageProcessor]:
    config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=_IMAGE_EMBED,
    )
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModelWithProjection(config), processor


def _scheduler() -> DDIMScheduler:
    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def random_ip_adapter_state_dict(unet: UNet2DConditionModel, image_embed_dim: int = _IMAGE_EMBED) -> dict:
    """A plain IP-Adapter (4 tokens) state dict in the layout `load_ip_adapter` reads, random weights."""
    cross_dim = unet.config.cross_attention_dim
    num_tokens = 4
    image_proj = {
        "proj.weight": torch.randn(num_tokens * cross_dim, image_embed_dim) * 0.05,
        "proj.bias": torch.zeros(num_tokens * cross_dim),
        "norm.weight": torch.ones(cross_dim),
        "norm.bias": torch.zeros(cross_dim),
    }
    ip_adapter: dict[str, torch.Tensor] = {}
    key = 1
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        hidden = _hidden_size_of(unet, name)
        ip_adapter[f"{key}.to_k_ip.weight"] = torch.randn(hidden, cross_dim) / cross_dim**0.5
        ip_adapter[f"{key}.to_v_ip.weight"] = torch.randn(hidden, cross_dim) / cross_dim**0.5
        key += 2
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def random_ip_adapter_plus_state_dict(
    unet: UNet2DConditionModel, image_hidden_dim: int = 32, num_queries: int = 16
) -> dict:
    """An IP-Adapter-Plus state dict (Resampler image projection, original key names), random weights."""
    cross_dim = unet.config.cross_attention_dim
    hidden, inner, depth = image_hidden_dim, 64, 4  # one 64-wide head: the loader infers heads = to_q rows / 64

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape) / shape[-1] ** 0.5

    image_proj: dict[str, torch.Tensor] = {
        "latents": rand(1, num_queries, hidden),
        "proj_in.weight": rand(hidden, image_hidden_dim),
        "proj_in.bias": torch.zeros(hidden),
        "proj_out.weight": rand(cross_dim, hidden),
        "proj_out.bias": torch.zeros(cross_dim),
        "norm_out.weight": torch.ones(cross_dim),
        "norm_out.bias": torch.zeros(cross_dim),
    }
    image_proj.update(random_perceiver_layers(depth, hidden, inner, 4, rand))
    ip_adapter = random_ip_adapter_state_dict(unet)["ip_adapter"]
    return {"image_proj": image_proj, "ip_adapter": ip_adapter}


def random_perceiver_layers(
    depth: int, dim: int, inner: int, ff_mult: int, rand: Callable[[int, int], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Random weights of a Perceiver resampler's `layers.*` (attention, then feed-forward, per layer) in the key
    layout IP-Adapter-Plus and MS-Diffusion share; `rand(rows, columns)` draws one matrix."""
    weights: dict[str, torch.Tensor] = {}
    for i in range(depth):
        for norm in ("norm1", "norm2"):
            weights[f"layers.{i}.0.{norm}.weight"] = torch.ones(dim)
            weights[f"layers.{i}.0.{norm}.bias"] = torch.zeros(dim)
        weights[f"layers.{i}.0.to_q.weight"] = rand(inner, dim)
        weights[f"layers.{i}.0.to_kv.weight"] = rand(2 * inner, dim)
        weights[f"layers.{i}.0.to_out.weight"] = rand(dim, inner) * 0.1
        weights[f"layers.{i}.1.0.weight"] = torch.ones(dim)
        weights[f"layers.{i}.1.0.bias"] = torch.zeros(dim)
        weights[f"layers.{i}.1.1.weight"] = rand(ff_mult * dim, dim)
        weights[f"layers.{i}.1.3.weight"] = rand(dim, ff_mult * dim) * 0.1
    return weights


def _hidden_size_of(unet: UNet2DConditionModel, processor_name: str) -> int:
    module_path = processor_name.removesuffix(".processor")
    attn = unet.get_submodule(module_path)
    return attn.to_q.out_features


def tiny_sd15_unet() -> UNet2DConditionModel:
    """SD1.5's UNet shape at tiny widths and depths: 4 levels, the same block types (cross-attention at the first
    three levels, latent/1, /2, /4, and none at the lowest, as in the real model), one 16-wide attention head
    everywhere. The full-resolution level has no layer on the down path (its block only downsamples) and one on
    the up path, so the 4,096-token self-attention of a 512 x 512 canvas runs once per UNet call instead of five
    times (SD1.5: 2 down + 3 up): it is the one cost that grows with the square of the canvas area."""
    return UNet2DConditionModel(
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=(0, 1, 1, 1),
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=_TEXT_HIDDEN,
        attention_head_dim=(1, 1, 2, 2),  # diffusers reads it as heads per level (SD1.5's config quirk): 16 wide
        norm_num_groups=8,
    )


def tiny_sdxl_unet() -> UNet2DConditionModel:
    """SDXL's UNet shape at tiny widths and depths: 3 levels, the same block types (no attention at the first,
    full latent resolution), deeper transformers at the lowest level, text_time added conditioning, 16-wide
    heads. The first two levels have no layer on the down path (their blocks only downsample) and one on the up
    path, so the latent/2 self-attention (4,096 tokens at 1024 x 1024) runs once per UNet call."""
    return UNet2DConditionModel(
        block_out_channels=(16, 16, 32),
        layers_per_block=(0, 0, 1),
        sample_size=128,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=2 * _TEXT_HIDDEN,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=_TEXT_HIDDEN + 6 * 8,
        use_linear_projection=True,
        attention_head_dim=(1, 1, 2),
        transformer_layers_per_block=(1, 1, 2),
        norm_num_groups=8,
    )


def build_tiny_sd15(
    with_ip_adapter: bool = True,
    seed: int = TINY_SEED,
    plus: bool = False,
    unet_factory: Callable[[], UNet2DConditionModel] | None = None,
) -> StableDiffusionPipeline:
    """SD1.5-shaped pipeline: 4-level UNet, VAE factor 8, 32-wide CLIP text encoder (float32, CPU). `plus`
    loads an IP-Adapter-Plus (Resampler, 16 tokens from the encoder's penultimate hidden states).
    `unet_factory` swaps in another UNet (e.g. a mid-size one for benchmarks); the text encoder follows its
    cross-attention width."""
    torch.manual_seed(seed)
    unet = (unet_factory or tiny_sd15_unet)()
    vae = tiny_vae()
    text_encoder = CLIPTextModel(_text_config(unet.config.cross_attention_dim))
    image_encoder, feature_extractor = _image_encoder()
    ip_state = random_ip_adapter_state_dict(unet)
    if plus:
        ip_state = random_ip_adapter_plus_state_dict(unet)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=feature_extractor,
        image_encoder=image_encoder,
        requires_safety_checker=False,
    )
    if with_ip_adapter:
        pipe.load_ip_adapter(ip_state, subfolder="", weight_name="")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl(with_ip_adapter: bool = True, seed: int = TINY_SEED) -> StableDiffusionXLPipeline:
    """SDXL-shaped pipeline: two text encoders (32 + 32), text_time added conditioning, 3-level UNet, VAE factor 8."""
    torch.manual_seed(seed)
    unet = tiny_sdxl_unet()
    vae = tiny_vae()
    text_encoder = CLIPTextModel(_text_config())
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    image_encoder, feature_extractor = _image_encoder()
    ip_state = random_ip_adapter_state_dict(unet)
    tokenizer = tiny_tokenizer()
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    if with_ip_adapter:
        pipe.load_ip_adapter(ip_state, subfolder="", weight_name="")
    pipe.set_progress_bar_config(disable=True)
    return pipe
