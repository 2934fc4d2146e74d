"""studio.images, the one home of image bytes: PNG encoding and masks stored as PNG."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from studio.images import decode_image, decode_mask_png, encode_mask_png, encode_png


def test_png_round_trips_to_rgb() -> None:
    image = Image.new("RGB", (6, 5), (10, 20, 30))
    data = encode_png(image)
    assert Image.open(io.BytesIO(data)).format == "PNG"
    assert decode_image(data).getpixel((5, 4)) == (10, 20, 30)


def test_mask_png_is_mode_l_canvas_sized_and_round_trips() -> None:
    mask = np.zeros((5, 6), dtype=bool)
    mask[1:3, 2:5] = True
    data = encode_mask_png(mask)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    assert image.mode == "L"
    assert image.size == (6, 5)
    assert set(np.unique(np.asarray(image))) == {0, 255}
    np.testing.assert_array_equal(decode_mask_png(data), mask)


def test_mask_png_reads_grey_at_128_and_resizes_nearest() -> None:
    grey = Image.fromarray(np.array([[127, 128], [0, 255]], dtype=np.uint8), "L")
    np.testing.assert_array_equal(decode_mask_png(encode_png(grey)), [[False, True], [False, True]])
    doubled = decode_mask_png(encode_png(grey), size=(4, 2))  # (width, height)
    np.testing.assert_array_equal(doubled, [[False, False, True, True], [False, False, True, True]])
