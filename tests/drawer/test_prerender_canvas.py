"""A preset's `prerender_max_side`: subject init pre-renders its groups on the turn's canvas scaled down (the
tiny presets' speed setting); the collage, its blend and the finished picture stay at the turn's canvas."""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from drawer import Drawer
from drawer.batches import prerender_inputs
from drawer.core import Drawer as DrawerClass
from drawer.standin import PlannedBoxLocator
from drawer.subject_init import fill_canvas, prerender_canvas
from studio.draw import DrawJob, SubjectCrop
from studio.protocols import LocateTarget
from studio.settings import default_presets
from tests.drawer.conftest import fast_settings, png, two_subject_plan


@pytest.mark.parametrize(
    ("height", "width", "max_side", "expected"),
    [
        (512, 512, None, (512, 512)),  # real presets: the turn's canvas
        (512, 512, 256, (256, 256)),
        (200, 120, 256, (200, 120)),  # already small enough: unchanged
        (768, 1344, 256, (144, 256)),  # aspect kept (146.3 rounded down to a multiple of 8)
        (1024, 920, 256, (256, 224)),
        (2048, 64, 256, (256, 64)),  # never under 64 px (or the turn's side)
    ],
)
def test_prerender_canvas(height: int, width: int, max_side: int | None, expected: tuple[int, int]) -> None:
    assert prerender_canvas(height, width, max_side) == expected


def test_only_the_tiny_presets_shrink_their_prerenders() -> None:
    presets = default_presets()
    assert presets["tiny"].prerender_max_side == presets["tiny-sdxl"].prerender_max_side == 256
    assert presets["sd15"].prerender_max_side is None and presets["sdxl"].prerender_max_side is None


def test_prerender_batch_at_a_smaller_canvas(tiny_drawer: Drawer) -> None:
    pipe = tiny_drawer.pipe
    plan = two_subject_plan(scale=2)  # 128 x 192
    noise = torch.randn(1, 4, 16, 24)
    inputs = prerender_inputs(pipe, plan, fast_settings(), None, {}, noise, canvas=(64, 96))
    assert inputs is not None
    batch = inputs.batch
    assert (batch.height, batch.width) == (64, 96)
    assert batch.latents.shape == (2, 4, 8, 12)
    for row in batch.latents:
        torch.testing.assert_close(row, noise[0, :, :8, :12], rtol=0, atol=0)  # the same seed's noise, its corner
    for group, image in zip(inputs.groups, batch.images, strict=True):
        expected = fill_canvas([m.box for m in group.members], 64, 96)
        assert image.boxes == expected, "the group's boxes fill the pre-render canvas"


class SizeRecordingLocator(PlannedBoxLocator):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]:
        self.sizes.append(image.size)
        return super().locate(image, targets)


def test_a_turn_prerenders_small_and_draws_full_size(tiny_drawer: Drawer) -> None:
    locator = SizeRecordingLocator()
    preset = tiny_drawer.preset.model_copy(update={"prerender_max_side": 96})
    drawer = DrawerClass(tiny_drawer.pipe, preset, locator=locator)
    plan = two_subject_plan(scale=2)  # 128 x 192: pre-rendered at 64 x 96
    result = drawer.draw(DrawJob(plan=plan, references={"1": png("red")}, settings=fast_settings()))
    assert locator.sizes == [(96, 64), (96, 64), (192, 128)], "two group pre-renders, then the turn's picture"
    assert Image.open(io.BytesIO(result.image)).size == (192, 128)
    assert result.timings["prerender"] > 0
