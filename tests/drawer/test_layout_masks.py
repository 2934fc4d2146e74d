from __future__ import annotations

import pytest
import torch

from drawer.layout_masks import Grid, attention_grids, box_coverage, layout_weights
from studio.geometry import Box


def test_grids_follow_the_unet_downsampling_for_1024x920() -> None:
    grids = attention_grids(920, 1024, vae_factor=8, levels=4)
    assert [(g.height, g.width) for g in grids] == [(115, 128), (58, 64), (29, 32), (15, 16)]
    assert [g.cell for g in grids] == [8, 16, 32, 64]


def test_grids_match_real_conv_downsampling() -> None:
    conv = torch.nn.Conv2d(1, 1, 3, stride=2, padding=1)
    x = torch.zeros(1, 1, 115, 61)
    grids = attention_grids(115, 61, vae_factor=1, levels=4)
    for grid in grids:
        assert (grid.height, grid.width) == tuple(x.shape[-2:])
        x = conv(x)


def test_grid_rejects_sizes_off_the_vae_factor() -> None:
    with pytest.raises(ValueError):
        attention_grids(100, 64, vae_factor=8, levels=2)


def test_coverage_is_exact_area_fraction_including_partial_last_cell() -> None:
    grid = Grid(height=2, width=3, cell=16)  # canvas 24 x 40: last row/col cells are partial
    cov = box_coverage(Box(x=8, y=0, w=32, h=24), grid, height=24, width=40)
    assert cov[0].tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert cov[1].tolist() == pytest.approx([0.5, 1.0, 1.0])


@pytest.mark.parametrize("level", range(4))
def test_weights_1024x920_per_level(level: int) -> None:
    height, width = 920, 1024
    grid = attention_grids(height, width, 8, 4)[level]
    a, b = Box(x=0, y=0, w=512, h=512), Box(x=256, y=256, w=512, h=512)
    w = layout_weights([a, b], [True, False], grid, height, width, (1.2, 0.0), 0.3, 0.7)
    assert w.text.shape == (4, grid.tokens) and w.image.shape == (2, grid.tokens)
    text = w.text.reshape(4, grid.height, grid.width)
    image = w.image.reshape(2, grid.height, grid.width)
    assert torch.allclose(text.sum(0), torch.ones(grid.height, grid.width, dtype=torch.float64))
    cell = grid.cell
    only_a = (100 // cell, 100 // cell)
    both = (400 // cell, 400 // cell)
    outside = (900 // cell, 1000 // cell)
    assert text[2][only_a].item() == pytest.approx(1.2) and text[3][only_a].item() == 0
    assert text[2][both].item() == pytest.approx(0.6) and text[3][both].item() == pytest.approx(0.6)
    assert text[0][both].item() == pytest.approx(0.3) and text[1][both].item() == pytest.approx(-0.5)
    assert text[1][outside].item() == pytest.approx(1.0) and text[0][outside].item() == 0
    assert image[0][only_a].item() == pytest.approx(0.7) and image[0][both].item() == pytest.approx(0.35)
    assert (image[1] == 0).all(), "a subject without a reference gets no image weight"


def test_zero_subjects_background_everywhere() -> None:
    grid = attention_grids(64, 96, 2, 2)[1]
    w = layout_weights([], [], grid, 64, 96, (1.2, 0.0), 0.3, 0.7)
    assert (w.text[0] == 0).all() and (w.text[1] == 1).all() and w.image.shape == (0, grid.tokens)
