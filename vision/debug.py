"""A picture for humans: planned boxes (dashed yellow) against detected boxes (solid magenta) and mask
outlines (cyan), each labelled with its subject id on a dark plate. Labels never overlap one another and
stay inside the picture (vision.labels.place_labels); font and line width grow with the canvas. Pure PIL."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from studio.draw import SubjectCrop
from studio.geometry import Box
from studio.images import decode_mask_png, encode_png, mask_image
from studio.plan import TurnPlan
from vision.labels import Font, LabelRequest, Rect, font_size_for, label_font, place_labels

PLANNED = (255, 215, 0)
DETECTED = (255, 0, 255)
OUTLINE = (0, 255, 255)
MISSING = (255, 64, 64)
PLATE = (0, 0, 0, 176)


@dataclass(frozen=True)
class Label:
    """A text label, its colour, and where its plate's top-left corner would like to be."""

    text: str
    color: tuple[int, int, int]
    x: int
    y: int


def line_width_for(width: int, height: int) -> int:
    return max(2, round(max(width, height) / 384))


def _dashed_rectangle(
    draw: ImageDraw.ImageDraw, box: Box, color: tuple[int, int, int], width: int = 2, dash: int = 6
) -> None:
    x0, y0, x1, y1 = box.to_xyxy()
    x1, y1 = x1 - 1, y1 - 1
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(int(length // dash), 1)
        for i in range(0, steps, 2):
            t0, t1 = i / steps, min((i + 1) / steps, 1.0)
            draw.line(
                [(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)], color, width
            )


def _mask_outline(mask_png: bytes, size: tuple[int, int]) -> Image.Image | None:
    mask = decode_mask_png(mask_png)
    if mask.shape != (size[1], size[0]):
        return None
    binary = mask_image(mask)
    return ImageChops.subtract(binary, binary.filter(ImageFilter.MinFilter(3)))


def fit_text(text: str, font: Font, max_width: int) -> str:
    """`text`, cut with an ellipsis where it would be wider than `max_width` pixels ('' when nothing fits)."""
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text + "…" if text else ""


def draw_labels(canvas: Image.Image, labels: list[Label], font_size: int) -> list[Rect | None]:
    """Draw labels on dark plates, laid out by place_labels (earlier labels
    win the better spots); returns where each plate went (None: no room left for it)."""
    font = label_font(font_size)
    pad = max(1, font_size // 6)
    ascent, descent = font.getmetrics() if isinstance(font, ImageFont.FreeTypeFont) else (font_size, 0)
    plate_h = ascent + descent + 2 * pad
    texts = [fit_text(label.text, font, canvas.width - 2 * pad - 1) for label in labels]
    gap = 1  # requested one pixel wider and taller than the plate, so neighbouring plates never touch
    widths = [math.ceil(font.getlength(text)) + 2 * pad + gap if text else 0 for text in texts]
    requests = [
        LabelRequest(x=label.x, y=label.y, width=width, height=plate_h + gap)
        for width, label in zip(widths, labels, strict=True)
    ]
    spots = [
        Rect(spot.x0, spot.y0, spot.x1 - gap, spot.y1 - gap) if spot is not None else None
        for spot in place_labels(requests, canvas.width, canvas.height)
    ]
    overlay = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
    plates = ImageDraw.Draw(overlay)
    for spot in spots:
        if spot is not None:
            plates.rectangle([spot.x0, spot.y0, spot.x1 - 1, spot.y1 - 1], fill=PLATE)
    canvas.paste(Image.alpha_composite(canvas.convert("RGBA"), overlay).convert("RGB"))
    draw = ImageDraw.Draw(canvas)
    for spot, text, label in zip(spots, texts, labels, strict=True):
        if spot is not None:
            draw.text((spot.x0 + pad, spot.y0 + pad), text, fill=label.color, font=font)
    return spots


def debug_labels(plan: TurnPlan, crops: dict[str, SubjectCrop]) -> list[Label]:
    """The labels of a debug picture, most important first: each planned subject's id (or "id missing") wished
    just inside its planned box's top-left corner, then each detection's "id: score" just below its box's
    bottom-left corner (inside the box when that is off the canvas)."""
    labels: list[Label] = []
    for item in plan.items:
        crop = crops.get(item.subject_id)
        missing = crop is None or not crop.found
        x0, y0, _, _ = item.box.to_xyxy()
        text = f"{item.subject_id} missing" if missing else item.subject_id
        labels.append(Label(text, MISSING if missing else PLANNED, round(x0) + 2, round(y0) + 2))
    for subject_id, crop in crops.items():
        if crop.box is not None:
            x0, _, _, y1 = crop.box.to_xyxy()
            labels.append(Label(f"{subject_id}: {crop.score:.2f}", DETECTED, round(x0) + 2, round(y1) + 1))
    return labels


def draw_debug(image: Image.Image, plan: TurnPlan, crops: dict[str, SubjectCrop]) -> bytes:
    """PNG of `image` (same size) with the plan's boxes, the detections, mask outlines and id labels."""
    canvas = image.convert("RGB").copy()
    for crop in crops.values():
        if crop.found and crop.mask is not None:
            outline = _mask_outline(crop.mask, canvas.size)
            if outline is not None:
                canvas.paste(Image.new("RGB", canvas.size, OUTLINE), mask=outline)
    draw = ImageDraw.Draw(canvas)
    line = line_width_for(*canvas.size)
    for item in plan.items:
        _dashed_rectangle(draw, item.box, PLANNED, width=line, dash=3 * line)
    for crop in crops.values():
        if crop.box is None:
            continue
        x0, y0, x1, y1 = crop.box.to_xyxy()
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=DETECTED, width=line)
    font_size = font_size_for(*canvas.size)
    draw_labels(canvas, debug_labels(plan, crops), font_size)
    return encode_png(canvas)
