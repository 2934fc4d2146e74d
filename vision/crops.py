"""Reference crops: the subject cut out by its mask, on neutral grey, padded to a square.

Grey (not black or white) outside the mask keeps the background from reading as part of the subject,
and the square keeps CLIP's centre crop (IP-Adapter's image encoder) from cutting off a tall subject's
head or a wide subject's sides (notes §6.7)."""

from __future__ import annotations

import numpy as np
from PIL import Image

GREY = (128, 128, 128)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1), exclusive ends, of the mask's true pixels; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def masked_square_crop(image: Image.Image, mask: np.ndarray, fill: tuple[int, int, int] = GREY) -> Image.Image:
    """The mask's bounding box cut from `image`, pixels outside the mask set to `fill`, centred on a
    `fill` square whose side is the longer side of that box (odd leftovers go right/bottom)."""
    rgb = np.asarray(image.convert("RGB"))
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match the image's {rgb.shape[:2]}")
    bbox = mask_bbox(mask)
    if bbox is None:
        raise ValueError("cannot crop an empty mask")
    x0, y0, x1, y1 = bbox
    w, h = x1 - x0, y1 - y0
    side = max(w, h)
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = fill
    ox, oy = (side - w) // 2, (side - h) // 2
    region = out[oy : oy + h, ox : ox + w]
    inside = mask[y0:y1, x0:x1].astype(bool)
    region[inside] = rgb[y0:y1, x0:x1][inside]
    return Image.fromarray(out, "RGB")
