"""Building the diffusers pipeline a ModelPreset names."""

from __future__ import annotations

from diffusers import DiffusionPipeline

from drawer.tiny import build_tiny_sd15, build_tiny_sdxl
from studio.settings import ModelPreset


def load_pipeline(preset: ModelPreset) -> DiffusionPipeline:
    if preset.kind == "tiny":
        return build_tiny_sd15()
    if preset.kind == "tiny-sdxl":
        return build_tiny_sdxl()
    raise NotImplementedError(f"loading {preset.kind!r} models is not written yet")
