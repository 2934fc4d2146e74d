"""The tiny presets follow the real models' shapes (VAE factor, UNet levels, where attention sits) and draw
every canvas the real presets accept, odd latent sizes included."""

from __future__ import annotations

import io

import pytest
from diffusers import UNet2DConditionModel
from PIL import Image

from drawer import Drawer
from studio.draw import DrawJob
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.settings import default_presets
from tests.drawer.conftest import fast_settings, png

# diffusers' configs of stable-diffusion-v1-5 and stable-diffusion-xl-base-1.0 (unet/config.json)
SD15_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SD15_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
SDXL_DOWN = ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
SDXL_UP = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]


def _attention_levels(unet: UNet2DConditionModel) -> list[int]:
    """The UNet levels (0 = full latent resolution) that hold attention modules, on the down or the up path."""
    levels = len(unet.down_blocks)
    found = {level for level, block in enumerate(unet.down_blocks) if len(getattr(block, "attentions", [])) > 0}
    found |= {levels - 1 - i for i, block in enumerate(unet.up_blocks) if len(getattr(block, "attentions", [])) > 0}
    return sorted(found)


def test_tiny_sd15_has_sd15_shapes(tiny_drawer: Drawer) -> None:
    pipe = tiny_drawer.pipe
    assert pipe.vae_scale_factor == 8 and len(pipe.vae.config.block_out_channels) == 4
    assert list(pipe.unet.config.down_block_types) == SD15_DOWN
    assert list(pipe.unet.config.up_block_types) == SD15_UP
    assert _attention_levels(pipe.unet) == [0, 1, 2], "attention everywhere but the lowest resolution"


def test_tiny_sdxl_has_sdxl_shapes(tiny_sdxl_drawer: Drawer) -> None:
    pipe = tiny_sdxl_drawer.pipe
    assert pipe.vae_scale_factor == 8 and len(pipe.vae.config.block_out_channels) == 4
    assert list(pipe.unet.config.down_block_types) == SDXL_DOWN
    assert list(pipe.unet.config.up_block_types) == SDXL_UP
    assert _attention_levels(pipe.unet) == [1, 2], "no attention at the full latent resolution"
    depths = pipe.unet.config.transformer_layers_per_block
    assert depths[2] > depths[1], "deeper transformers at the lowest resolution"


def test_tiny_presets_accept_the_real_presets_sides() -> None:
    presets = default_presets()
    assert presets["tiny"].max_side == presets["sd15"].max_side
    assert presets["tiny-sdxl"].max_side == presets["sdxl"].max_side


def _draw_two_subjects(drawer: Drawer, height: int, width: int) -> Image.Image:
    items = [
        PlanItem(subject_id="1", phrase="a girl", box=Box(x=8, y=8, w=width // 2 - 16, h=height - 16)),
        PlanItem(subject_id="2", phrase="a dog", box=Box(x=width // 2 + 8, y=16, w=width // 2 - 24, h=height // 2)),
    ]
    plan = TurnPlan(height=height, width=width, background="a park", negative="blurry", items=items)
    settings = fast_settings(steps=2, subject_init_steps=1, refine_step=1, prerender_steps=1)
    result = drawer.draw(DrawJob(plan=plan, references={"1": png("red")}, settings=settings))
    return Image.open(io.BytesIO(result.image))


@pytest.mark.parametrize(("height", "width"), [(136, 200), (88, 120)])
def test_tiny_draws_odd_latent_sizes_through_all_levels(tiny_drawer: Drawer, height: int, width: int) -> None:
    """17 x 25 and 11 x 15 latents: odd at every level of the 4-level UNet; subject init and the
    Parallel-UNet masks on the way."""
    assert (height // 8) % 2 and (width // 8) % 2
    assert _draw_two_subjects(tiny_drawer, height, width).size == (width, height)


@pytest.mark.parametrize(("height", "width"), [(1024, 920), (768, 1344)])
def test_tiny_sdxl_draws_the_real_presets_odd_canvases(tiny_sdxl_drawer: Drawer, height: int, width: int) -> None:
    """920 / 8 = 115 and 1344 / 8 = 168 = 8 · 21 latents: sides that are multiples of 8 but not of 64."""
    assert _draw_two_subjects(tiny_sdxl_drawer, height, width).size == (width, height)


@pytest.mark.parametrize(("fixture", "level"), [("tiny_drawer", 0), ("tiny_sdxl_drawer", 1)])
def test_tiny_presets_attend_once_at_their_finest_attention_level(
    fixture: str, level: int, request: pytest.FixtureRequest
) -> None:
    """Speed (issue 11): the self-attention over the most tokens runs in one up-path layer, 16-wide heads."""
    unet = request.getfixturevalue(fixture).pipe.unet
    up = unet.up_blocks[len(unet.down_blocks) - 1 - level]
    assert len(getattr(unet.down_blocks[level], "attentions", [])) == 0
    assert len(up.attentions) == 1 and len(up.attentions[0].transformer_blocks) == 1
    attn = up.attentions[0].transformer_blocks[0].attn1
    assert attn.inner_dim // attn.heads == 16
