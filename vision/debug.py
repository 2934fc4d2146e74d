"""A picture for humans: planned boxes (dashed yellow) against detected boxes (solid magenta) and mask
outlines (cyan), each labelled with its subject id. Pure PIL."""

from __future__ import annotations

from PIL import Image, ImageChops, ImageDraw, ImageFilter

from studio.draw import SubjectCrop
from studio.geometry import Box
from studio.images import decode_mask_png, encode_png, mask_image
from studio.plan import TurnPlan

PLANNED = (255, 215, 0)
DETECTED = (255, 0, 255)
OUTLINE = (0, 255, 255)
MISSING = (255, 64, 64)


def _dashed_rectangle(draw: ImageDraw.ImageDraw, box: Box, color: tuple[int, int, int], dash: int = 6) -> None:
    x0, y0, x1, y1 = box.to_xyxy()
    x1, y1 = x1 - 1, y1 - 1
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(int(length // dash), 1)
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min((i + 1) / steps, 1.0)
            draw.line(
                [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)], color, 2
            )


def _mask_outline(mask_png: bytes, size: tuple[int, int]) -> Image.Image | None:
    mask = decode_mask_png(mask_png)
    if mask.shape != (size[1], size[0]):
        return None
    binary = mask_image(mask)
    return ImageChops.subtract(binary, binary.filter(ImageFilter.MinFilter(3)))


def draw_debug(image: Image.Image, plan: TurnPlan, crops: dict[str, SubjectCrop]) -> bytes:
    """PNG of `image` (same size) with the plan's boxes, the detections, mask outlines and id labels."""
    canvas = image.convert("RGB").copy()
    for crop in crops.values():
        if crop.found and crop.mask is not None:
            outline = _mask_outline(crop.mask, canvas.size)
            if outline is not None:
                canvas.paste(Image.new("RGB", canvas.size, OUTLINE), mask=outline)
    draw = ImageDraw.Draw(canvas)
    for item in plan.items:
        _dashed_rectangle(draw, item.box, PLANNED)
        crop = crops.get(item.subject_id)
        missing = crop is None or not crop.found
        label = f"{item.subject_id} missing" if missing else item.subject_id
        draw.text((item.box.x + 3, item.box.y + 2), label, fill=MISSING if missing else PLANNED)
    for subject_id, crop in crops.items():
        if crop.box is None:
            continue
        x0, y0, x1, y1 = crop.box.to_xyxy()
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=DETECTED, width=2)
        draw.text((x0 + 3, max(y1 - 14, y0)), f"{subject_id} {crop.score:.2f}", fill=DETECTED)
    return encode_png(canvas)
