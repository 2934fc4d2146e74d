"""Regions as masks in the Parallel-UNet (docs/regions.md): a plan item's canvas weights (its mask, or its box
as a rectangle, feathered by `mask_std` and scaled by `mask_strength`), their coverage of every attention grid,
the prompt-strength lerp of region text rows, and the rows of region negative prompts.

The layout weights (drawer.layout_masks) take a region's grid coverage wherever they take a box's: a cell's
coverage is the mean of the canvas weights over the cell's pixels (clipped to the canvas), which for a
rectangle is exactly the box's area coverage. A plain box (no mask, strength 1, σ 0) has no canvas weights at
all and goes through the box path unchanged, bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from drawer.layout_masks import Grid, LayoutWeights, box_coverage
from studio.geometry import Box
from studio.plan import PlanItem
from studio.regions import is_plain_box


def gaussian_kernel(std: float) -> torch.Tensor:
    radius = max(1, math.ceil(3.0 * std))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / std) ** 2)
    return kernel / kernel.sum()


def feather(weights: torch.Tensor, std: float) -> torch.Tensor:
    """Separable Gaussian blur (σ = `std` pixels) of [H, W] weights; the canvas edge is extended (replicate), so a
    mask touching the edge stays whole there. σ 0 returns the weights unchanged."""
    if std <= 0:
        return weights
    kernel = gaussian_kernel(std).to(weights.dtype)
    radius = (len(kernel) - 1) // 2
    out = weights[None, None]
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return out[0, 0]


def raw_weights(item: PlanItem, height: int, width: int) -> torch.Tensor:
    """The item's unfeathered canvas weights, float64 [H, W]: its mask, or its box as a rectangle."""
    if item.mask is not None:
        return torch.from_numpy(item.mask.raster(height, width).astype("float64"))
    assert item.box is not None
    x0, y0, x1, y1 = item.box.pixel_bounds(height, width)
    out = torch.zeros(height, width, dtype=torch.float64)
    out[y0:y1, x0:x1] = 1.0
    return out


def canvas_weights(item: PlanItem, height: int, width: int) -> torch.Tensor | None:
    """The item's soft canvas weights (float64 [H, W]), or None for a plain box (drawn by the box path)."""
    if is_plain_box(item.mask, item.mask_strength, item.mask_std):
        return None
    return feather(raw_weights(item, height, width), item.mask_std) * item.mask_strength


def grid_coverage(weights: torch.Tensor, grid: Grid, height: int, width: int) -> torch.Tensor:
    """[grid.height, grid.width] mean of canvas weights [H, W] over each cell clipped to the canvas, float64."""
    cell = grid.cell
    padded = torch.zeros(grid.height * cell, grid.width * cell, dtype=torch.float64)
    rows, cols = min(height, padded.shape[0]), min(width, padded.shape[1])
    padded[:rows, :cols] = weights[:rows, :cols].to(torch.float64)
    sums = padded.view(grid.height, cell, grid.width, cell).sum(dim=(1, 3))
    row_size = torch.clamp(height - torch.arange(grid.height, dtype=torch.float64) * cell, 0, cell)
    col_size = torch.clamp(width - torch.arange(grid.width, dtype=torch.float64) * cell, 0, cell)
    area = row_size[:, None] * col_size[None, :]
    return sums / torch.clamp(area, min=1.0)


def region_coverage(
    boxes: Sequence[Box], masks: Sequence[torch.Tensor | None] | None, grid: Grid, height: int, width: int
) -> torch.Tensor | None:
    """[n, gh, gw] coverage of a layout's subjects at one grid: a mask's where it has one, the box's elsewhere.
    None when no subject has a mask (the layout computes box coverage itself)."""
    if masks is None or all(mask is None for mask in masks):
        return None
    return torch.stack(
        [
            box_coverage(box, grid, height, width) if mask is None else grid_coverage(mask, grid, height, width)
            for box, mask in zip(boxes, masks, strict=True)
        ]
    )


def lerp_rows(rows: torch.Tensor, background_row: int, subject_rows: Sequence[int], strengths: Sequence[float]):
    """Prompt strength: each subject row becomes lerp(background, subject, s) (rows with s = 1 untouched)."""
    if all(s == 1.0 for s in strengths):
        return rows
    out = rows.clone()
    for row, strength in zip(subject_rows, strengths, strict=True):
        if strength != 1.0:
            out[row] = torch.lerp(rows[background_row], rows[row], strength)
    return out


def negative_weights(
    per_grid: Sequence[LayoutWeights], negative_rows: Sequence[int | None], grids: Sequence[Grid]
) -> tuple[list[torch.Tensor], list[tuple[int, list[torch.Tensor]]]]:
    """The unconditional half's rows when subjects have their own negative prompt: the pipeline's negative row
    weighted 1 − Σ share of those subjects, and each subject's negative row weighted by its share (its box or
    mask share of the layout), so the weights still sum to 1 on every token."""
    own = [(i, row) for i, row in enumerate(negative_rows) if row is not None]
    pipeline = [
        1.0 - sum((w.share[i] for i, _ in own), torch.zeros(grid.tokens, dtype=torch.float64))
        for w, grid in zip(per_grid, grids, strict=True)
    ]
    return pipeline, [(row, [w.share[i] for w in per_grid]) for i, row in own]
