"""Images in the drawer: decoding with user-facing errors (the decoding itself is studio.images'), masks."""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from studio import images as studio_images
from studio.failures import DrawError
from studio.geometry import Box

NEUTRAL_GREY = (127, 127, 127)


def decode_image(data: bytes, what: str) -> Image.Image:
    """PNG/JPEG/WebP bytes → RGB image, or a DrawError naming `what` (e.g. "the reference of subject 2")."""
    try:
        image = studio_images.decode_image(data)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as exc:
        raise DrawError(f"{what} is not a readable image ({type(exc).__name__})") from exc
    if image.width < 1 or image.height < 1:
        raise DrawError(f"{what} is empty")
    return image


def box_mask(box: Box, height: int, width: int) -> Image.Image:
    """Mode-L canvas-size mask, 255 inside the box."""
    array = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box.pixel_bounds(height, width)
    array[y0:y1, x0:x1] = 255
    return Image.fromarray(array, mode="L")


def square_pad(image: Image.Image, fill: tuple[int, int, int] = NEUTRAL_GREY) -> Image.Image:
    """Pad to a square, image centred, so CLIP's centre crop cannot cut the subject."""
    side = max(image.width, image.height)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return canvas
