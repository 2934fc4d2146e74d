"""Per-pixel layout weights of the Parallel-UNet, at every attention resolution of the UNet.

The token grid of each UNet level is computed the way the UNet computes it: the latent grid is
canvas / vae_factor, and each downsampling conv (kernel 3, stride 2, padding p) maps a side s to
floor((s + 2p - 3) / 2) + 1 (a ceil division for p = 1). So canvases such as 1024×920 or 64×96 get exact
grids (128×115 → 64×58 → 32×29 → 16×15), never ones derived from a square-root pixel ratio (notes §6.3).

Boxes are rasterized on each grid by exact area coverage: a cell that a box covers by a third gets 1/3.
With B_i the coverage of box i, c = Σ B_i, u = min(c, 1) and share_i = B_i · u / c:

- text rows: subject i  f0 · share_i;  global  g · u;  background  1 − f0 · u − g · u + s · f1 · (1 − u)
  (the text weights sum to 1 wherever f1 = 0; background goes negative inside boxes, a local negative prompt);
- image rows: subject i  s · share_i if it has a reference, else 0.

f0, f1 = fuse_scale, g = global_weight, s = img_scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from studio.geometry import Box


@dataclass(frozen=True)
class Grid:
    """One attention resolution: `height × width` tokens, each `cell` canvas pixels square."""

    height: int
    width: int
    cell: int

    @property
    def tokens(self) -> int:
        return self.height * self.width


def downsampled_side(side: int, padding: int = 1, kernel: int = 3, stride: int = 2) -> int:
    return math.floor((side + 2 * padding - kernel) / stride) + 1


def attention_grids(height: int, width: int, vae_factor: int, levels: int, downsample_padding: int = 1) -> list[Grid]:
    """The token grid of every UNet level for a canvas, from the latent grid down."""
    if height % vae_factor or width % vae_factor:
        raise ValueError(f"canvas {width}x{height} is not a multiple of the VAE factor {vae_factor}")
    grids = [Grid(height // vae_factor, width // vae_factor, vae_factor)]
    for _ in range(levels - 1):
        last = grids[-1]
        grids.append(
            Grid(
                downsampled_side(last.height, downsample_padding),
                downsampled_side(last.width, downsample_padding),
                last.cell * 2,
            )
        )
    return grids


def _coverage_1d(start: float, stop: float, cells: int, cell: int, limit: int) -> torch.Tensor:
    """Fraction of each cell (clipped to the canvas side `limit`) that [start, stop) covers."""
    lo = torch.arange(cells, dtype=torch.float64) * cell
    hi = torch.clamp(lo + cell, max=float(limit))
    overlap = torch.clamp(torch.minimum(hi, torch.tensor(stop)) - torch.maximum(lo, torch.tensor(start)), min=0.0)
    return overlap / torch.clamp(hi - lo, min=1e-9)


def box_coverage(box: Box, grid: Grid, height: int, width: int) -> torch.Tensor:
    """[grid.height, grid.width] coverage of a canvas-pixel box, float64."""
    x0, y0, x1, y1 = box.to_xyxy()
    rows = _coverage_1d(max(y0, 0.0), min(y1, float(height)), grid.height, grid.cell, height)
    cols = _coverage_1d(max(x0, 0.0), min(x1, float(width)), grid.width, grid.cell, width)
    return rows[:, None] * cols[None, :]


@dataclass(frozen=True)
class LayoutWeights:
    """Weights of one image at one grid, flattened to tokens: text rows [global, background, subjects…]
    and image rows [subjects…]."""

    text: torch.Tensor
    image: torch.Tensor
    share: torch.Tensor | None = None
    """[subjects, tokens] share of each subject (regions: drawer.region_masks)."""


def layout_weights(
    boxes: list[Box],
    has_reference: list[bool],
    grid: Grid,
    height: int,
    width: int,
    fuse_scale: tuple[float, float],
    global_weight: float,
    img_scale: float,
    coverage: torch.Tensor | None = None,
) -> LayoutWeights:
    """`coverage` [n, gh, gw], when given, replaces the boxes' own coverage (regions as masks)."""
    f0, f1 = fuse_scale
    n = len(boxes)
    if coverage is None and n:
        coverage = torch.stack([box_coverage(box, grid, height, width) for box in boxes])
    elif coverage is None:
        coverage = torch.zeros(0, grid.height, grid.width, dtype=torch.float64)
    total = coverage.sum(0)
    union = torch.clamp(total, max=1.0)
    share = torch.where(total > 0, coverage * union / torch.clamp(total, min=1e-12), torch.zeros_like(coverage))
    global_row = global_weight * union
    background = 1.0 - f0 * union - global_weight * union + img_scale * f1 * (1.0 - union)
    text = torch.cat([global_row[None], background[None], f0 * share])
    ref = torch.tensor(has_reference, dtype=torch.float64).reshape(n, 1, 1)
    image = img_scale * share * ref
    return LayoutWeights(
        text=text.reshape(n + 2, grid.tokens), image=image.reshape(n, grid.tokens), share=share.reshape(n, grid.tokens)
    )
