"""Building the diffusers pipeline a ModelPreset names: SD1.5 or SDXL from a hub id, a local diffusers folder
or a single checkpoint file; a separate VAE; IP-Adapter(-Plus) with its CLIP image encoder; dtype, device
and model CPU offload. The `tiny` kinds build random-weight models for tests (drawer.tiny)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from drawer.tiny import build_tiny_sd15, build_tiny_sdxl
from studio.settings import ModelPreset

logger = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin")

PIPELINE_CLASSES: dict[str, type[DiffusionPipeline]] = {
    "sd15": StableDiffusionPipeline,
    "tiny": StableDiffusionPipeline,
    "sdxl": StableDiffusionXLPipeline,
    "tiny-sdxl": StableDiffusionXLPipeline,
    "msdiffusion": StableDiffusionXLPipeline,
}

# AutoStudio's DDIM (notes §1.6): scaled-linear betas 0.00085–0.012, no sample clipping, steps offset 1.
DDIM_OVERRIDES: dict[str, Any] = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
}


class ModelLoadError(RuntimeError):
    """A preset that cannot be loaded as configured (bad device, missing base model…)."""


def pipeline_class(kind: str) -> type[DiffusionPipeline]:
    try:
        return PIPELINE_CLASSES[kind]
    except KeyError:
        raise ModelLoadError(f"unknown model kind {kind!r}; known: {sorted(PIPELINE_CLASSES)}") from None


def resolve_device(name: str) -> torch.device:
    """'auto' → the first CUDA device if there is one, else the CPU. A CUDA device that is not there is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(f"device {name!r} was asked for but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelLoadError(f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' → float16 on CUDA, float32 elsewhere (half precision on CPU is slow and lossy)."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    dtypes = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    try:
        return dtypes[name]
    except KeyError:
        raise ModelLoadError(f"unknown dtype {name!r}; known: {sorted(dtypes)} or 'auto'") from None


def is_single_file(base: str) -> bool:
    """A checkpoint file (local path or URL) rather than a hub id or a diffusers folder."""
    return base.lower().endswith(SINGLE_FILE_SUFFIXES) and not Path(base).is_dir()


def make_scheduler(name: str, config: dict[str, Any]) -> SchedulerMixin | None:
    """A scheduler for a DrawSettings name built from the checkpoint's scheduler config; None for 'default'."""
    if name == "default":
        return None
    if name == "ddim":
        return DDIMScheduler.from_config(config, **DDIM_OVERRIDES)
    if name == "dpm++":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++", use_karras_sigmas=True)
    if name == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(config)
    if name == "pndm":
        return PNDMScheduler.from_config(config, skip_prk_steps=True)
    raise ModelLoadError(f"unknown scheduler {name!r}")


def _component_kwargs(preset: ModelPreset, dtype: torch.dtype) -> dict[str, Any]:
    from transformers import CLIPVisionModelWithProjection

    kwargs: dict[str, Any] = {"dtype": dtype}
    if preset.vae:
        if is_single_file(preset.vae):
            kwargs["vae"] = AutoencoderKL.from_single_file(preset.vae, dtype=dtype)
        else:
            kwargs["vae"] = AutoencoderKL.from_pretrained(preset.vae, dtype=dtype)
    if preset.ip_adapter and preset.image_encoder:
        encoder_kwargs: dict[str, Any] = {"dtype": dtype}
        if preset.image_encoder_subfolder:
            encoder_kwargs["subfolder"] = preset.image_encoder_subfolder
        kwargs["image_encoder"] = CLIPVisionModelWithProjection.from_pretrained(preset.image_encoder, **encoder_kwargs)
    return kwargs


def _load_base(preset: ModelPreset, dtype: torch.dtype) -> DiffusionPipeline:
    if not preset.base:
        raise ModelLoadError(f"preset of kind {preset.kind!r} needs `base` (hub id, folder or checkpoint file)")
    cls = pipeline_class(preset.kind)
    kwargs = _component_kwargs(preset, dtype)
    if is_single_file(preset.base):
        return cls.from_single_file(preset.base, **kwargs)
    return cls.from_pretrained(preset.base, **kwargs)


def _load_ip_adapter(pipe: DiffusionPipeline, preset: ModelPreset) -> None:
    if not preset.ip_adapter:
        logger.warning("preset has no IP-Adapter: subject references will not condition the drawing")
        return
    if not preset.ip_adapter_weight:
        raise ModelLoadError("`ip_adapter_weight` must name the weight file, e.g. ip-adapter-plus_sd15.safetensors")
    # With an image encoder already on the pipeline the loader must not look for one next to the weights.
    encoder_folder = None if getattr(pipe, "image_encoder", None) is not None else "image_encoder"
    pipe.load_ip_adapter(
        preset.ip_adapter,
        subfolder=preset.ip_adapter_subfolder,
        weight_name=preset.ip_adapter_weight,
        image_encoder_folder=encoder_folder,
    )


def _place(pipe: DiffusionPipeline, preset: ModelPreset, device: torch.device, dtype: torch.dtype) -> None:
    if preset.offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device=device, dtype=dtype)


def load_pipeline(preset: ModelPreset) -> DiffusionPipeline:
    """Build the preset's pipeline, ready to draw (progress bars off)."""
    device = resolve_device(preset.device)
    dtype = resolve_dtype(preset.dtype, device)
    if preset.offload and device.type != "cuda":
        raise ModelLoadError("model CPU offload needs a CUDA device (set offload = false or device = 'cuda')")
    if preset.kind in ("tiny", "tiny-sdxl"):
        pipe = build_tiny_sd15() if preset.kind == "tiny" else build_tiny_sdxl()
        if device.type != "cpu" or dtype != torch.float32:
            pipe.to(device=device, dtype=dtype)
        return pipe
    pipe = _load_base(preset, dtype)
    if preset.kind == "msdiffusion":
        from drawer.msdiffusion.loading import prepare_msdiffusion

        prepare_msdiffusion(pipe, preset, dtype)
    else:
        _load_ip_adapter(pipe, preset)
    _place(pipe, preset, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
