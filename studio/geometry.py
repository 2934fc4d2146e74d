"""Boxes in canvas pixels (top-left origin, x/y/w/h), the CMIGBench / LMD convention."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

MAX_COORDINATE = 1_000_000.0
"""Bound of any box coordinate or side (canvases are at most a few thousand pixels)."""


class Box(BaseModel):
    """An axis-aligned box: top-left corner (x, y), width w and height h, in canvas pixels."""

    model_config = ConfigDict(frozen=True)

    x: FiniteFloat = Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    y: FiniteFloat = Field(ge=-MAX_COORDINATE, le=MAX_COORDINATE)
    w: FiniteFloat = Field(gt=0, le=MAX_COORDINATE)
    h: FiniteFloat = Field(gt=0, le=MAX_COORDINATE)

    @classmethod
    def from_xyxy(cls, x0: float, y0: float, x1: float, y1: float) -> Box:
        return cls(x=x0, y=y0, w=x1 - x0, h=y1 - y0)

    def to_xyxy(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def normalized(self, height: int, width: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) as fractions of the canvas."""
        x0, y0, x1, y1 = self.to_xyxy()
        return (x0 / width, y0 / height, x1 / width, y1 / height)

    def scaled(self, sx: float, sy: float) -> Box:
        return Box(x=self.x * sx, y=self.y * sy, w=self.w * sx, h=self.h * sy)

    def clipped(self, height: int, width: int) -> Box | None:
        """The part of the box inside the canvas, or None when nothing of it is inside."""
        x0, y0, x1, y1 = self.to_xyxy()
        x0, y0 = max(0.0, x0), max(0.0, y0)
        x1, y1 = min(float(width), x1), min(float(height), y1)
        if x1 <= x0 or y1 <= y0:
            return None
        return Box.from_xyxy(x0, y0, x1, y1)

    @property
    def area(self) -> float:
        return self.w * self.h

    def intersection(self, other: Box) -> float:
        ax0, ay0, ax1, ay1 = self.to_xyxy()
        bx0, by0, bx1, by1 = other.to_xyxy()
        iw = min(ax1, bx1) - max(ax0, bx0)
        ih = min(ay1, by1) - max(ay0, by0)
        return max(0.0, iw) * max(0.0, ih)

    def iou(self, other: Box) -> float:
        inter = self.intersection(other)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def contains_fraction(self, other: Box) -> float:
        """Fraction of `other`'s area that lies inside this box."""
        return self.intersection(other) / other.area

    def pixel_bounds(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Integer (x0, y0, x1, y1) clamped to the canvas; never wraps for negative coordinates."""
        x0, y0, x1, y1 = self.to_xyxy()
        ix0 = min(max(math.floor(x0), 0), width)
        iy0 = min(max(math.floor(y0), 0), height)
        ix1 = min(max(math.ceil(x1), 0), width)
        iy1 = min(max(math.ceil(y1), 0), height)
        return ix0, iy0, ix1, iy1
