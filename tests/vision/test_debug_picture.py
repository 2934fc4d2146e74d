"""The debug picture: a PNG of the image's size, changed where boxes and outlines are drawn."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
from PIL import Image

from studio.draw import SubjectCrop
from studio.geometry import Box
from studio.images import encode_mask_png
from studio.plan import PlanItem, TurnPlan
from vision.debug import DETECTED, OUTLINE, PLANNED, debug_labels, draw_debug, draw_labels
from vision.labels import MIN_FONT_SIZE, LabelRequest, Rect, font_size_for, place_labels


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


def _random_plan(rng: random.Random, width: int, height: int) -> tuple[TurnPlan, dict[str, SubjectCrop]]:
    """Up to six subjects, some with components, boxes anywhere (also flush with the edges), half detected."""
    items, crops = [], {}
    for mother in range(1, rng.randint(1, 6) + 1):
        for subject_id in [str(mother)] + [f"{mother}-{k}" for k in range(1, rng.randint(0, 2) + 1)]:
            w, h = rng.randint(8, width), rng.randint(8, height)
            box = Box(x=rng.randint(0, width - w), y=rng.randint(0, height - h), w=w, h=h)
            items.append(PlanItem(subject_id=subject_id, phrase="thing", box=box))
            if rng.random() < 0.5:
                crops[subject_id] = SubjectCrop(subject_id=subject_id, found=True, box=box, score=rng.random())
            else:
                crops[subject_id] = SubjectCrop(subject_id=subject_id, found=False)
    return TurnPlan(height=height, width=width, items=items), crops


def _assert_apart_and_inside(spots: list[Rect | None], width: int, height: int) -> None:
    placed = [spot for spot in spots if spot is not None]
    for i, spot in enumerate(placed):
        assert spot.inside(width, height), (spot, width, height)
        for other in placed[i + 1 :]:
            assert not spot.intersects(other), (spot, other)


def test_place_labels_never_overlaps_and_stays_inside_for_random_requests() -> None:
    rng = random.Random(11)
    for _ in range(300):
        width, height = rng.randint(64, 1344), rng.randint(64, 1344)
        requests = [
            LabelRequest(
                x=rng.randint(-50, width + 50),
                y=rng.randint(-50, height + 50),
                width=rng.randint(1, width + 10),
                height=rng.randint(1, 40),
            )
            for _ in range(rng.randint(1, 24))
        ]
        spots = place_labels(requests, width, height)
        assert len(spots) == len(requests)
        _assert_apart_and_inside(spots, width, height)
        for request, spot in zip(requests, spots, strict=True):
            if spot is not None:
                assert (spot.width, spot.height) == (request.width, request.height)
            if request.width > width:
                assert spot is None


def test_place_labels_keeps_a_free_wish_and_finds_room_next_to_a_crowd() -> None:
    first, second = place_labels([LabelRequest(10, 10, 30, 12), LabelRequest(12, 12, 30, 12)], 200, 200)
    assert first == Rect(10, 10, 40, 22)  # free wish kept
    assert second is not None and not second.intersects(first)
    # four 32 x 12 labels wished at one corner tile a 64 x 24 canvas exactly
    spots = place_labels([LabelRequest(0, 0, 32, 12)] * 4, 64, 24)
    assert sorted((s.x0, s.y0) for s in spots if s is not None) == [(0, 0), (0, 12), (32, 0), (32, 12)]
    assert place_labels([LabelRequest(0, 0, 65, 10), LabelRequest(0, 0, 64, 10)], 64, 64)[0] is None


@pytest.mark.parametrize("seed", range(6))
def test_debug_labels_of_random_plans_never_overlap_and_stay_inside(seed: int) -> None:
    rng = random.Random(seed)
    for side in (64, 128, 256, 512, 768, 1024, 1344):
        width, height = side, rng.choice([64, 128, 512, 768, side])
        plan, crops = _random_plan(rng, width, height)
        canvas = Image.new("RGB", (width, height), (30, 30, 30))
        font_size = font_size_for(width, height)
        labels = debug_labels(plan, crops)
        spots = draw_labels(canvas, labels, font_size)
        assert len(spots) == len(labels) == len(plan.items) + sum(c.box is not None for c in crops.values())
        _assert_apart_and_inside(spots, width, height)
        if side >= 256 and len(labels) <= 4:
            assert all(spot is not None for spot in spots)  # a few labels always find room on a real canvas


def test_a_subject_and_its_component_in_one_corner_get_separate_labels() -> None:
    """The reported case: "1" and "1-1" wished at the same corner used to be drawn on top of each other."""
    for side in (64, 128, 512):
        box = Box(x=0, y=0, w=side // 2, h=side // 2)
        plan = TurnPlan(
            height=side,
            width=side,
            items=[
                PlanItem(subject_id="1", phrase="girl", box=box),
                PlanItem(subject_id="1-1", phrase="hat", box=box),
            ],
        )
        crops = {key: SubjectCrop(subject_id=key, found=True, box=box, score=0.5) for key in ("1", "1-1")}
        spots = draw_labels(Image.new("RGB", (side, side)), debug_labels(plan, crops), font_size_for(side, side))
        assert all(spot is not None for spot in spots)
        _assert_apart_and_inside(spots, side, side)


def test_label_at_the_right_edge_stays_inside_on_a_dark_plate() -> None:
    image = Image.new("RGB", (128, 128), (255, 255, 255))
    plan = TurnPlan(
        height=128, width=128, items=[PlanItem(subject_id="12", phrase="cat", box=Box(x=120, y=0, w=8, h=8))]
    )
    canvas = image.copy()
    (spot,) = draw_labels(canvas, debug_labels(plan, {}), font_size_for(128, 128))
    assert spot is not None and spot.inside(128, 128) and spot.x1 == 127  # pushed left, its 1-px gap kept
    pixels = np.asarray(canvas)
    assert pixels[spot.y0 + 1, spot.x0].max() < 128  # the plate darkens what lies beneath


def test_font_and_plates_grow_with_the_canvas() -> None:
    sizes = [font_size_for(side, side) for side in range(64, 1345, 8)]
    assert sizes == sorted(sizes) and sizes[0] >= MIN_FONT_SIZE and sizes[-1] >= 3 * sizes[0]
    assert font_size_for(1344, 768) > font_size_for(512, 512) > font_size_for(128, 128)
    heights = []
    for side in (64, 512, 1344):
        plan = TurnPlan(
            height=side, width=side, items=[PlanItem(subject_id="1", phrase="cat", box=Box(x=8, y=8, w=32, h=32))]
        )
        (spot,) = draw_labels(Image.new("RGB", (side, side)), debug_labels(plan, {}), font_size_for(side, side))
        assert spot is not None
        heights.append(spot.height)
    assert heights == sorted(heights) and heights[-1] > 2 * heights[0]
