"""Image bytes: decoding with limits (uploads), and PNG encoding."""

from __future__ import annotations

import io
import warnings

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
