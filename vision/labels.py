"""Text labels on pictures: a font sized to the canvas, and a layout that keeps every label inside the
picture and off every other label. Pure PIL and arithmetic; used by the debug picture and the contact sheet."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from PIL import ImageFont

MIN_FONT_SIZE = 9

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle, half-open: x0 ≤ x < x1, y0 ≤ y < y1."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def center(self) -> tuple[int, int]:
        return ((self.x0 + self.x1) // 2, (self.y0 + self.y1) // 2)

    def intersects(self, other: Rect) -> bool:
        """True when the two share a pixel (touching edges do not count)."""
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def inside(self, width: int, height: int) -> bool:
        return self.x0 >= 0 and self.y0 >= 0 and self.x1 <= width and self.y1 <= height


@dataclass(frozen=True)
class LabelRequest:
    """A label of `width` × `height` pixels that would like its top-left corner at (x, y)."""

    x: int
    y: int
    width: int
    height: int


def font_size_for(width: int, height: int) -> int:
    """Label font size in pixels for a canvas: about 1/36 of its geometric mean side, at least MIN_FONT_SIZE
    (64 px → 9, 512 px → 14, 1024 px → 28)."""
    return max(MIN_FONT_SIZE, round(math.sqrt(width * height) / 36))


@lru_cache(maxsize=32)
def label_font(size: int) -> Font:
    """Pillow's bundled font at `size` px (needs Pillow ≥ 10.1 with FreeType; otherwise its fixed bitmap font)."""
    return ImageFont.load_default(size=size)


def place_labels(requests: list[LabelRequest], width: int, height: int) -> list[Rect | None]:
    """Where each label goes, in order of priority (earlier requests are placed first, nearest their wish).

    Every returned rectangle lies inside the width × height canvas and intersects no other returned
    rectangle; a label that fits nowhere (or is larger than the canvas) gets None. Candidate corners are the
    wished one pulled inside the canvas and every position flush against the canvas edges or an already
    placed label; the nearest free candidate wins, so a free spot next to the crowd is always found."""
    placed: list[Rect] = []
    result: list[Rect | None] = []
    for request in requests:
        w, h = request.width, request.height
        if w <= 0 or h <= 0 or w > width or h > height:
            result.append(None)
            continue
        xs = {request.x, 0, width - w} | {r.x1 for r in placed} | {r.x0 - w for r in placed}
        ys = {request.y, 0, height - h} | {r.y1 for r in placed} | {r.y0 - h for r in placed}
        xs = {min(max(x, 0), width - w) for x in xs}
        ys = {min(max(y, 0), height - h) for y in ys}
        candidates = sorted(
            ((x, y) for x in xs for y in ys),
            key=lambda c: ((c[0] - request.x) ** 2 + (c[1] - request.y) ** 2, c[1], c[0]),
        )
        spot = next(
            (
                rect
                for rect in (Rect(x, y, x + w, y + h) for x, y in candidates)
                if not any(rect.intersects(other) for other in placed)
            ),
            None,
        )
        if spot is not None:
            placed.append(spot)
        result.append(spot)
    return result
