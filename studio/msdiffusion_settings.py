"""MS-Diffusion's per-turn settings (the `msdiffusion` block of DrawSettings; used by presets of kind
`msdiffusion`, see docs/msdiffusion.md). Defaults are the published inference defaults."""

from __future__ import annotations

from pydantic import BaseModel, Field, FiniteFloat


class MSDiffusionSettings(BaseModel):
    scale: FiniteFloat = Field(
        default=0.6,
        ge=0.0,
        le=5.0,
        description="strength of each subject's image tokens inside its box (0.4 suits scenes)",
    )
    drop_grounding: bool = Field(
        default=False, description="start the resampler from its learned latents instead of the phrase + box tokens"
    )
    mask_threshold: FiniteFloat | None = Field(
        default=None,
        gt=0.0,
        lt=1.0,
        description="auto layout: from start_step on, a subject's mask is its phrase's attention map above this "
        "(min-max normalised); None: the boxes all along",
    )
    start_step: int = Field(
        default=5, ge=0, le=200, description="auto layout: the first step that uses attention masks"
    )
