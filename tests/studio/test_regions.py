"""The region contract: masks on plan items (PNG or polygon), their validation and derived boxes."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from studio.draw import DrawJob
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.regions import MAX_MASK_PNG_BYTES, RegionMask, mask_bounds


def mask_png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), mode).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def plan_with(item: dict, height: int = 64, width: int = 96) -> TurnPlan:
    return TurnPlan.model_validate({"height": height, "width": width, "items": [{"subject_id": "1", **item}]})


def test_polygon_covers_the_pixels_whose_centres_lie_inside() -> None:
    square = RegionMask(polygon=[(10, 8), (30, 8), (30, 20), (10, 20)]).raster(64, 96)
    expected = np.zeros((64, 96), dtype=np.float32)
    expected[8:20, 10:30] = 1.0
    assert np.array_equal(square, expected)
    triangle = RegionMask(polygon=[(0, 0), (40, 0), (0, 40)]).raster(64, 96)
    ys, xs = np.mgrid[0:64, 0:96] + 0.5
    assert np.array_equal(triangle > 0, (xs + ys < 40) & (xs < 40) & (ys < 40))


def test_png_mask_is_resampled_to_the_canvas_and_reads_alpha() -> None:
    small = np.zeros((32, 48), dtype=np.uint8)
    small[:, :24] = 255
    weights = RegionMask(png=mask_png(small)).raster(64, 96)
    assert weights.shape == (64, 96)
    assert (weights[:, :46] == 1.0).all() and (weights[:, 50:] == 0.0).all()
    rgba = np.zeros((64, 96, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere: only the alpha channel says where the region is
    rgba[10:20, 10:20, 3] = 128
    soft = RegionMask(png=mask_png(rgba, "RGBA")).raster(64, 96)
    assert mask_bounds(soft) == (10, 10, 20, 20) and abs(float(soft[15, 15]) - 128 / 255) < 1e-6


def test_a_mask_alone_derives_the_box_and_a_given_box_is_kept() -> None:
    derived = plan_with({"phrase": "a cat", "mask": {"polygon": [[10, 8], [30, 8], [30, 20], [10, 20]]}})
    assert derived.items[0].box == Box(x=10, y=8, w=20, h=12)
    kept = plan_with(
        {
            "phrase": "a cat",
            "box": {"x": 0, "y": 0, "w": 50, "h": 50},
            "mask": {"polygon": [[10, 8], [30, 8], [30, 20], [10, 20]]},
        }
    )
    assert kept.items[0].box == Box(x=0, y=0, w=50, h=50)
    partly_outside = plan_with({"phrase": "a cat", "mask": {"polygon": [[-20, -20], [30, -20], [30, 20]]}})
    assert partly_outside.items[0].box == Box(x=6, y=0, w=24, h=20)  # the part inside the canvas


def test_masks_survive_a_json_round_trip_as_base64() -> None:
    array = np.zeros((64, 96), dtype=np.uint8)
    array[5:25, 5:45] = 255
    plan = plan_with({"phrase": "a cat", "mask": {"png": mask_png(array)}, "mask_std": 2.0, "negative": "ugly"})
    text = plan.model_dump_json()
    assert isinstance(json.loads(text)["items"][0]["mask"]["png"], str)
    again = TurnPlan.model_validate_json(text)
    assert again == plan and again.items[0].box == Box(x=5, y=5, w=40, h=20)
    job = DrawJob.model_validate_json(DrawJob(plan=plan).model_dump_json())
    assert job.plan.items[0].mask == plan.items[0].mask


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"phrase": "a cat"}, "needs a `box` or a `mask`"),
        ({"phrase": "a cat", "mask": {}}, "exactly one"),
        ({"phrase": "a cat", "mask": {"polygon": [[0, 0], [1, 1]]}}, "at least 3"),
        ({"phrase": "a cat", "mask": {"polygon": [[0, 0], [50, 0.2], [90, 0.1]]}}, "items[0].mask is empty"),
        ({"phrase": "a cat", "mask": {"polygon": [[200, 200], [300, 200], [300, 300]]}}, "items[0].mask is empty"),
        ({"phrase": "a cat", "mask": {"polygon": [[0, 0], [1e300, 0], [0, 5]]}}, "less than or equal"),
        ({"phrase": "a cat", "mask_std": -1, "box": {"x": 0, "y": 0, "w": 5, "h": 5}}, "greater than or equal"),
        ({"phrase": "a cat", "mask_strength": 2, "box": {"x": 0, "y": 0, "w": 5, "h": 5}}, "less than or equal"),
        ({"phrase": "a cat", "prompt_strength": -0.1, "box": {"x": 0, "y": 0, "w": 5, "h": 5}}, "greater than"),
    ],
)
def test_bad_masks_and_options_are_refused(item: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        plan_with(item)


def test_bad_png_masks_are_refused_before_decoding() -> None:
    empty = np.zeros((64, 96), dtype=np.uint8)
    cases = {
        "empty on the": {"png": mask_png(empty)},
        "cannot be read": {"png": b"\x89PNG not really"},
        "not PNG": {"png": _jpeg()},
        "exceeds the limit": {"png": bomb_png()},
        "the limit is": {"png": b"\x89PNG" + b"0" * MAX_MASK_PNG_BYTES},
    }
    for message, mask in cases.items():
        with pytest.raises(ValidationError, match=message):
            plan_with({"phrase": "a cat", "mask": mask})


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_plan_items_without_masks_are_unchanged() -> None:
    item = PlanItem(subject_id="1", phrase="a cat", box=Box(x=1, y=2, w=3, h=4))
    assert item.mask is None and item.mask_strength == 1.0 and item.mask_std == 0.0 and item.prompt_strength == 1.0
    assert item.negative is None
