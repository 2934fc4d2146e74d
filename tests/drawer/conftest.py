from __future__ import annotations

import io

import pytest
from PIL import Image

from drawer import Drawer, load_drawer
from studio.draw import DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.settings import default_presets


@pytest.fixture(scope="session")
def tiny_drawer() -> Drawer:
    return load_drawer(default_presets()["tiny"])


@pytest.fixture(scope="session")
def tiny_sdxl_drawer() -> Drawer:
    return load_drawer(default_presets()["tiny-sdxl"])


def png(color: tuple[int, int, int] | str, size: tuple[int, int] = (30, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def fast_settings(**overrides: object) -> DrawSettings:
    values: dict[str, object] = dict(
        steps=4, seed=7, subject_init_steps=2, refine_step=3, prerender_steps=2, guidance_scale=7.5
    )
    values.update(overrides)
    return DrawSettings(**values)


def two_subject_plan(height: int = 64, width: int = 96, scale: int = 1) -> TurnPlan:
    """A girl and a dog on a `height` x `width` canvas; `scale` multiplies the canvas and the boxes."""
    return TurnPlan(
        height=height * scale,
        width=width * scale,
        background="a park",
        negative="blurry",
        items=[
            PlanItem(
                subject_id="1", phrase="a girl with a red scarf", box=Box(x=0, y=8, w=40, h=48).scaled(scale, scale)
            ),
            PlanItem(subject_id="2", phrase="a brown dog", box=Box(x=56, y=16, w=32, h=40).scaled(scale, scale)),
        ],
    )


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread() -> object:
    """Tiny models are dominated by threading overhead (and CI shares 2 cores): one thread is faster."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
