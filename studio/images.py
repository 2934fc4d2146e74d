"""Image bytes, the one home of their rules: decoding (with limits for uploads), PNG encoding, and masks
stored as PNG (mode L, 255 inside, 0 outside; read back as True where a pixel is >= 128)."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

ALLOWED_FORMATS = {"PNG", "JPEG", "WEBP"}


class ImageRejected(ValueError):
    """Bytes that are not an acceptable image; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def decode_image(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def mask_image(mask: np.ndarray) -> Image.Image:
    """A bool (H, W) mask as a mode-L picture: 255 where the mask is set, 0 elsewhere."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")


def encode_mask_png(mask: np.ndarray) -> bytes:
    return encode_png(mask_image(mask))


def decode_mask_png(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """The inverse of `encode_mask_png`: a bool (H, W) array; resized (nearest) to `size` = (width, height)
    first when given."""
    with Image.open(io.BytesIO(data)) as opened:
        grey = opened.convert("L")
    if size is not None and grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    return np.asarray(grey) >= 128


def sniff_upload(data: bytes, max_bytes: int, max_pixels: int) -> Image.Image:
    """Validate uploaded bytes: size limit, the type read from the bytes themselves (never the
    filename or the client's content type), the pixel count read from the header before decoding
    (a decompression bomb is refused before it is expanded), then a full decode."""
    if not data:
        raise ImageRejected("the upload is empty")
    if len(data) > max_bytes:
        raise ImageRejected(f"the upload is {len(data)} bytes; the limit is {max_bytes}", status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
            kind = probe.format
            width, height = probe.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image refused as a decompression bomb: {exc}", status=413) from exc
    except Exception as exc:
        raise ImageRejected("the upload is not a readable image (PNG, JPEG or WebP)") from exc
    if kind not in ALLOWED_FORMATS:
        raise ImageRejected(f"image type {kind} is not accepted; send PNG, JPEG or WebP", status=415)
    if width * height > max_pixels:
        raise ImageRejected(f"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels", status=413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return decode_image(data)
    except Exception as exc:
        raise ImageRejected(f"the image could not be decoded: {exc}") from exc
