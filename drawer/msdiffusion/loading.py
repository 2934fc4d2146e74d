"""Loading a preset of kind `msdiffusion`: an SDXL base (hub id, folder or single file), the CLIP ViT-bigG
vision tower, and MS-Diffusion's adapter file (hub id + file name, a folder, or a file path)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import DiffusionPipeline
from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

from drawer.msdiffusion.weights import AdapterFileError, install_adapter, read_adapter_file
from studio.settings import ModelPreset


def adapter_path(preset: ModelPreset) -> Path:
    """The adapter file: `ms_adapter` itself when it is a file, `ms_adapter/ms_adapter_weight` for a folder,
    else downloaded from the hub repository `ms_adapter`."""
    if not preset.ms_adapter:
        raise AdapterFileError("a preset of kind 'msdiffusion' needs `ms_adapter` (hub id, folder or file)")
    source = Path(preset.ms_adapter).expanduser()
    if source.is_dir():
        return source / preset.ms_adapter_weight
    if source.is_file() or _looks_local(preset.ms_adapter):
        return source  # a missing local file is reported by read_adapter_file, naming it
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(preset.ms_adapter, preset.ms_adapter_weight))


def _looks_local(name: str) -> bool:
    return name.startswith((".", "~", "/")) or Path(name).suffix in (".bin", ".safetensors", ".pt", ".pth")


def load_image_encoder(preset: ModelPreset, dtype: torch.dtype) -> CLIPVisionModelWithProjection:
    if not preset.image_encoder:
        raise AdapterFileError("a preset of kind 'msdiffusion' needs `image_encoder` (CLIP ViT-bigG vision tower)")
    kwargs: dict[str, object] = {"dtype": dtype}
    if preset.image_encoder_subfolder:
        kwargs["subfolder"] = preset.image_encoder_subfolder
    return CLIPVisionModelWithProjection.from_pretrained(preset.image_encoder, **kwargs)


def prepare_msdiffusion(pipe: DiffusionPipeline, preset: ModelPreset, dtype: torch.dtype) -> DiffusionPipeline:
    """Add the image encoder and the adapter to a loaded SDXL pipeline (before it is placed on its device)."""
    path = adapter_path(preset)
    state = read_adapter_file(path)  # before the encoder: a wrong file fails fast
    pipe.register_modules(image_encoder=load_image_encoder(preset, dtype))
    if getattr(pipe, "feature_extractor", None) is None:
        pipe.register_modules(feature_extractor=CLIPImageProcessor())
    install_adapter(pipe, state, name=str(path))
    return pipe
