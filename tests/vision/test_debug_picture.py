"""The debug picture: a PNG of the image's size, changed where boxes and outlines are drawn."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from studio.draw import SubjectCrop
from studio.geometry import Box
from studio.images import encode_mask_png
from studio.plan import PlanItem, TurnPlan
from vision.debug import DETECTED, OUTLINE, PLANNED, draw_debug


def test_debug_picture_draws_planned_and_detected_boxes_and_outlines() -> None:
    image = Image.new("RGB", (128, 96), (40, 40, 40))
    plan = TurnPlan(
        height=96,
        width=128,
        items=[
            PlanItem(subject_id="1", phrase="girl", box=Box(x=8, y=8, w=48, h=80)),
            PlanItem(subject_id="2", phrase="dog", box=Box(x=72, y=40, w=48, h=48)),
        ],
    )
    mask = np.zeros((96, 128), dtype=bool)
    mask[30:60, 20:40] = True
    crops = {
        "1": SubjectCrop(
            subject_id="1", found=True, box=Box(x=16, y=24, w=32, h=40), score=0.7, mask=encode_mask_png(mask)
        ),
        "2": SubjectCrop(subject_id="2", found=False, reason="no 'dog' detected"),
    }
    data = draw_debug(image, plan, crops)
    out = Image.open(io.BytesIO(data))
    assert out.format == "PNG" and out.size == image.size
    pixels = np.asarray(out.convert("RGB"))
    assert tuple(pixels[8, 10]) == PLANNED  # top edge of the planned box (its first dash)
    assert tuple(pixels[40, 16]) == DETECTED  # left edge of the detected box
    assert tuple(pixels[45, 39]) == OUTLINE  # right edge of the mask
    assert tuple(pixels[45, 30]) == (40, 40, 40)  # inside the mask: untouched
    assert tuple(pixels[2, 100]) == (40, 40, 40)  # away from everything: untouched
