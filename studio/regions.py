"""Regions as masks (docs/regions.md): the mask a plan item may carry instead of, or besides, its box, the
per-region options, and the region sampler's settings. Pure numpy/PIL: the drawer turns these into per-level
weights (drawer.region_masks) and runs the sampler (drawer.region_sampler).

A mask is either a PNG (any size; resampled bilinearly to the canvas; its alpha channel when it has one, else
its grey level, /255, is the weight) or a polygon in canvas pixels (a pixel belongs to it when its centre lies
inside, even-odd rule). In JSON the PNG travels as base64, like every image of the API.
"""

from __future__ import annotations

import io
import warnings
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, field_validator, model_validator

from studio.geometry import Box

MAX_MASK_PNG_BYTES = 1024 * 1024
"""Schema bound of a PNG mask (a binary 2048² mask is a few kilobytes; the API's body limit applies on top)."""
MAX_MASK_PIXELS = 4096 * 4096
"""Bound of a PNG mask's own size, read from its header before decoding."""
MAX_POLYGON_POINTS = 1024
MAX_MASK_STD = 64.0
"""Feathering σ bound, in canvas pixels."""
POLYGON_BOUND = 1_000_000.0

Point = tuple[
    Annotated[FiniteFloat, Field(ge=-POLYGON_BOUND, le=POLYGON_BOUND)],
    Annotated[FiniteFloat, Field(ge=-POLYGON_BOUND, le=POLYGON_BOUND)],
]


class RegionMask(BaseModel):
    """Where a region is, as a PNG mask or a polygon (exactly one)."""

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")

    png: bytes | None = Field(
        default=None,
        description="PNG mask of any size (base64 in JSON): alpha, else grey, / 255 is the weight; resampled",
    )
    polygon: list[Point] | None = Field(
        default=None,
        min_length=3,
        max_length=MAX_POLYGON_POINTS,
        description="[[x, y], …] vertices in canvas pixels (top-left origin); pixel centres inside it belong to it",
    )

    @field_validator("png")
    @classmethod
    def _readable_png(cls, data: bytes | None) -> bytes | None:
        if data is None:
            return None
        problem = png_problem(data)
        if problem:
            raise ValueError(problem)
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> RegionMask:
        if (self.png is None) == (self.polygon is None):
            raise ValueError("a mask is either `png` or `polygon` (exactly one)")
        return self

    def raster(self, height: int, width: int) -> np.ndarray:
        """The mask's weights on the canvas: float32 [height, width] in [0, 1] (read-only, cached)."""
        if self.png is not None:
            return _png_raster(self.png, height, width)
        assert self.polygon is not None
        return _polygon_raster(tuple(self.polygon), height, width)


def png_problem(data: bytes) -> str | None:
    """Why bytes cannot be a PNG mask (size, type, pixel count from the header, a full decode), or None."""
    if not data:
        return "the PNG mask is empty"
    if len(data) > MAX_MASK_PNG_BYTES:
        return f"the PNG mask is {len(data)} bytes; the limit is {MAX_MASK_PNG_BYTES}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                if probe.format != "PNG":
                    return f"the mask is {probe.format}, not PNG"
                width, height = probe.size
                if width * height > MAX_MASK_PIXELS:
                    return f"the PNG mask of {width}x{height} pixels exceeds the limit of {MAX_MASK_PIXELS} pixels"
                probe.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return f"the PNG mask exceeds the limit of {MAX_MASK_PIXELS} pixels (refused before decoding)"
    except Exception as exc:  # PIL raises many kinds for broken input
        return f"the PNG mask cannot be read: {exc}"
    return None


def _weights_of(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return image.convert("RGBA").getchannel("A")
    return image.convert("L")


@lru_cache(maxsize=32)
def _png_raster(data: bytes, height: int, width: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as opened:
        grey = _weights_of(opened)
    if grey.size != (width, height):
        grey = grey.resize((width, height), Image.Resampling.BILINEAR)
    out = np.asarray(grey, dtype=np.float32) / 255.0
    out.flags.writeable = False
    return out


@lru_cache(maxsize=32)
def _polygon_raster(points: tuple[tuple[float, float], ...], height: int, width: int) -> np.ndarray:
    """Scanline fill at pixel centres, even-odd rule: each row's crossings with the edges, filled in pairs."""
    xs = np.array([p[0] for p in points], dtype=np.float64)
    ys = np.array([p[1] for p in points], dtype=np.float64)
    x0, y0, x1, y1 = xs, ys, np.roll(xs, -1), np.roll(ys, -1)
    out = np.zeros((height, width), dtype=np.float32)
    centres_x = np.arange(width) + 0.5
    for row in range(height):
        cy = row + 0.5
        crossing = (y0 <= cy) != (y1 <= cy)
        if not crossing.any():
            continue
        t = (cy - y0[crossing]) / (y1[crossing] - y0[crossing])
        hits = np.sort(x0[crossing] + t * (x1[crossing] - x0[crossing]))
        inside = (np.searchsorted(hits, centres_x, side="right") % 2) == 1
        out[row] = inside
    out.flags.writeable = False
    return out


def mask_bounds(weights: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) pixel bounds of the non-zero weights, or None when there are none."""
    rows = np.flatnonzero(weights.any(axis=1))
    cols = np.flatnonzero(weights.any(axis=0))
    if not len(rows):
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


MaskStrength = Annotated[
    FiniteFloat, Field(ge=0.0, le=1.0, description="the region's mask is multiplied by this (StreamMultiDiffusion)")
]
MaskStd = Annotated[
    FiniteFloat, Field(ge=0.0, le=MAX_MASK_STD, description="Gaussian feathering of the mask: σ in canvas pixels")
]
PromptStrength = Annotated[
    FiniteFloat,
    Field(ge=0.0, le=1.0, description="lerp of the region's text embedding from the background's (0) to its own (1)"),
]


def is_plain_box(mask: RegionMask | None, mask_strength: float, mask_std: float) -> bool:
    """Whether a plan item is drawn exactly as a box is today (no mask, full strength, no feathering)."""
    return mask is None and mask_strength == 1.0 and mask_std == 0.0


# --- the region sampler ---------------------------------------------------------------------------------

SamplerName = Literal["default", "regions"]
"""`default`: the pipeline's own denoising with the Parallel-UNet layout; `regions`: one UNet prediction per
region blended in latent space (StreamMultiDiffusion's region sampler, drawer.region_sampler)."""

Quantization = Literal["discrete", "continuous", "semi-continuous"]


class RegionSamplerSettings(BaseModel):
    """StreamMultiDiffusion's region sampler (seed-mechanisms.md §2), used when `sampler = "regions"`."""

    quantize: Quantization = Field(
        default="discrete", description="masks against the noise levels: [m > n_k], a ramp, or discrete then a ramp"
    )
    bootstrap_steps: int = Field(
        default=1, ge=0, le=200, description="first steps where each region sees a white background, centred"
    )
    bootstrap_mix_steps: FiniteFloat = Field(
        default=1.0, ge=0.0, le=200.0, description="white background weight at step i: clip(this − i, 0, 1)"
    )
    leak_sensitivity: FiniteFloat = Field(
        default=0.2, gt=0.0, le=10.0, description="leak suppression: m ← m·(2·sigmoid(leak / this) − 1)"
    )
    cover_alpha: FiniteFloat = Field(
        default=0.3, ge=0.0, le=1.0, description="weight of a mask where a later region's mask covers it"
    )
    centre: bool = Field(default=True, description="during bootstrapping, roll each region to the canvas centre")


SAMPLER_MECHANISMS = frozenset({"regional", "subject_reference", "subject_init"})
"""The mechanisms the region sampler composes with (docs/regions.md)."""


def sampler_problem(sampler: str, mechanisms: list[str], steps: int, regions: RegionSamplerSettings) -> str | None:
    """Why a DrawSettings' sampler choice cannot run, or None."""
    if sampler != "regions":
        return None
    other = sorted(set(mechanisms) - SAMPLER_MECHANISMS)
    if other:
        return f"sampler='regions' does not compose with the mechanisms {other} (docs/regions.md)"
    if regions.bootstrap_steps > steps:
        return f"regions.bootstrap_steps ({regions.bootstrap_steps}) cannot exceed steps ({steps})"
    return None


def mask_box(mask: RegionMask, height: int, width: int, where: str) -> Box:
    """The box around a mask's non-zero weights on the canvas (for detection and crops); a mask with no weight
    inside the canvas is refused, naming `where`."""
    bounds = mask_bounds(mask.raster(height, width))
    if bounds is None:
        raise ValueError(f"{where} is empty on the {width}x{height} canvas (no pixel inside it)")
    return Box.from_xyxy(*bounds)
