"""Crop making: the mask's box, grey outside the mask, centred on a grey square; masks as PNG mode L."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vision.crops import GREY, masked_square_crop


def _image() -> Image.Image:
    # 6 wide, 5 tall; every pixel distinct: R = 10·x, G = 10·y, B = 200
    array = np.zeros((5, 6, 3), dtype=np.uint8)
    for y in range(5):
        for x in range(6):
            array[y, x] = (10 * x, 10 * y, 200)
    return Image.fromarray(array, "RGB")


def test_tall_mask_is_padded_left_and_right_with_grey_outside_the_mask() -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:5, 2] = True  # a 1-wide, 4-tall column at x = 2, y = 1..4
    mask[2, 3] = True  # and one pixel beside it: the box is x 2..3, y 1..4 (2 wide, 4 tall)
    crop = np.asarray(masked_square_crop(_image(), mask))
    assert crop.shape == (4, 4, 3)
    expected = np.empty((4, 4, 3), dtype=np.uint8)
    expected[:] = GREY
    for row, y in enumerate(range(1, 5)):
        expected[row, 1] = (20, 10 * y, 200)  # the column lands at x offset 1 (pad (4 - 2) // 2)
    expected[1, 2] = (30, 20, 200)
    np.testing.assert_array_equal(crop, expected)


def test_wide_mask_is_padded_top_and_bottom() -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[3, 1:6] = True  # 5 wide, 1 tall
    crop = np.asarray(masked_square_crop(_image(), mask))
    assert crop.shape == (5, 5, 3)
    assert (crop[[0, 1, 3, 4]] == GREY).all()
    np.testing.assert_array_equal(crop[2], [(10 * x, 30, 200) for x in range(1, 6)])


def test_empty_or_misshaped_mask_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        masked_square_crop(_image(), np.zeros((5, 6), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        masked_square_crop(_image(), np.ones((4, 6), dtype=bool))
