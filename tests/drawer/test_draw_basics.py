from __future__ import annotations

import io
import threading

import pytest
from PIL import Image

from drawer import Drawer, PlannedBoxLocator
from studio.draw import DrawJob
from studio.failures import DrawCancelled
from studio.protocols import Drawer as DrawerProtocol
from studio.protocols import SubjectLocator
from tests.drawer.conftest import fast_settings, png, two_subject_plan


def test_drawer_and_standin_implement_the_protocols(tiny_drawer: Drawer) -> None:
    assert isinstance(tiny_drawer, DrawerProtocol)
    assert isinstance(PlannedBoxLocator(), SubjectLocator)


def test_draw_returns_png_seed_timings_steps_and_crops(tiny_drawer: Drawer) -> None:
    job = DrawJob(plan=two_subject_plan(), references={"1": png("red")}, settings=fast_settings(seed=None))
    steps: list[tuple[int, int]] = []
    result = tiny_drawer.draw(job, on_step=lambda step, total: steps.append((step, total)))
    image = Image.open(io.BytesIO(result.image))
    assert image.format == "PNG" and image.size == (96, 64) == (result.width, result.height)
    assert result.seed >= 0
    assert {"encode", "denoise", "locate"} <= set(result.timings)
    assert steps and steps[-1][0] == steps[-1][1]
    assert [s for s, _ in steps] == sorted(s for s, _ in steps)
    assert set(result.crops) == {"1", "2"} and all(crop.found for crop in result.crops.values())
    again = tiny_drawer.draw(job.model_copy(update={"settings": fast_settings(seed=result.seed)}))
    assert again.image == result.image


def test_same_seed_same_png_other_seed_differs(tiny_drawer: Drawer) -> None:
    job = DrawJob(plan=two_subject_plan(), settings=fast_settings(seed=11, subject_init=False))
    first = tiny_drawer.draw(job).image
    assert tiny_drawer.draw(job).image == first
    other = job.model_copy(update={"settings": fast_settings(seed=12, subject_init=False)})
    assert tiny_drawer.draw(other).image != first


def test_cancel_raises_between_steps(tiny_drawer: Drawer) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_step(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            cancel.set()

    job = DrawJob(plan=two_subject_plan(), settings=fast_settings(subject_init=False))
    with pytest.raises(DrawCancelled):
        tiny_drawer.draw(job, on_step=on_step, cancel=cancel)
    assert seen[-1] == 2
    tiny_drawer.draw(job)  # the drawer stays usable
