from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from PIL import Image

from drawer import Drawer, PlannedBoxLocator
from drawer.core import Drawer as DrawerClass
from drawer.editing import edit_blends
from drawer.latent_blend import LatentBlend, latent_mask
from drawer.subject_init import fill_canvas, group_subjects, make_collage
from studio.draw import DrawJob, SubjectCrop
from studio.geometry import Box
from studio.plan import EditSpec, PlanItem, TurnPlan
from studio.protocols import LocateTarget
from tests.drawer.conftest import fast_settings, png, two_subject_plan


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(np.int16)


def test_latent_blend_touches_only_masked_latents_and_only_first_k_steps() -> None:
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
    scheduler.set_timesteps(6)
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(1, 4, 8, 12, generator=gen)
    mask = torch.zeros(1, 1, 8, 12)
    mask[..., 2:6, 3:9] = 1
    noise = torch.randn(1, 4, 8, 12, generator=gen)
    blend = LatentBlend(scheduler, target, mask, noise, 0.8, until_step=3, total_steps=6)
    for step in range(6):
        latents = torch.randn(1, 4, 8, 12, generator=gen)
        out = blend(step, latents)
        assert torch.equal(out * (1 - mask), latents * (1 - mask)), "never outside the mask"
        inside_changed = not torch.equal(out * mask, latents * mask)
        assert inside_changed == (step + 1 < 3), f"step {step}"
    first = torch.randn(1, 4, 8, 12, generator=gen)
    assert not torch.equal(blend.blend_initial(first, scheduler.timesteps[0]), first)


def test_latent_mask_counts_any_covered_pixel() -> None:
    pixels = torch.zeros(16, 16)
    pixels[5, 9] = 1
    mask = latent_mask(pixels, 4)
    assert mask.shape == (1, 1, 4, 4) and mask.sum() == 1 and mask[0, 0, 1, 2] == 1


def test_fill_canvas_keeps_aspect_and_centres() -> None:
    (box,) = fill_canvas([Box(x=10, y=10, w=10, h=20)], height=64, width=96)
    assert (box.h, box.w) == pytest.approx((64, 32)) and box.x == pytest.approx(32) and box.y == pytest.approx(0)


def test_groups_components_with_their_mother() -> None:
    plan = TurnPlan(
        height=64,
        width=64,
        items=[
            PlanItem(subject_id="1", phrase="a knight", box=Box(x=0, y=0, w=30, h=60)),
            PlanItem(subject_id="2", phrase="a horse", box=Box(x=30, y=0, w=30, h=60)),
            PlanItem(subject_id="1-1", phrase="a shield", box=Box(x=0, y=20, w=10, h=10)),
        ],
    )
    groups = group_subjects(plan)
    assert [[m.subject_id for m in g.members] for g in groups] == [["1", "1-1"], ["2"]]
    assert [g.mother.subject_id for g in group_subjects(plan, only={"2"})] == ["2"]


def test_collage_pastes_aspect_kept_and_centred() -> None:
    source = Image.new("RGB", (64, 64), (200, 0, 0))
    mask = np.zeros((64, 64), dtype=bool)
    mask[0:64, 16:48] = True  # a 32 x 64 (w x h) cut-out
    target = Box(x=0, y=0, w=64, h=32)  # a wide box: scaled to 16 x 32 and centred horizontally
    collage = make_collage([("1", source, mask, target)], height=64, width=64)
    rows, cols = np.nonzero(collage.mask)
    assert (rows.min(), rows.max()) == (0, 31)
    assert (cols.min(), cols.max()) == (24, 39)
    assert collage.image.getpixel((30, 10)) == (200, 0, 0) and collage.image.getpixel((5, 10)) == (127, 127, 127)


class MissingLocator(PlannedBoxLocator):
    """Never finds subject 2."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]:
        self.calls.append([t.subject_id for t in targets])
        found = super().locate(image, targets)
        if "2" in found:
            found["2"] = SubjectCrop(subject_id="2", found=False, reason="no detection")
        return found


def test_subject_init_changes_the_picture_and_skips_missing_subjects(tiny_drawer: Drawer) -> None:
    plan = two_subject_plan()
    settings = fast_settings(seed=3, subject_init_steps=3)
    with_init = tiny_drawer.draw(DrawJob(plan=plan, settings=settings))
    without = tiny_drawer.draw(DrawJob(plan=plan, settings=settings.model_copy(update={"subject_init": False})))
    assert with_init.image != without.image
    assert "prerender" in with_init.timings and "prerender" not in without.timings

    locator = MissingLocator()
    drawer = DrawerClass(tiny_drawer.pipe, tiny_drawer.preset, locator=locator)
    result = drawer.draw(DrawJob(plan=plan, settings=settings))
    assert locator.calls[:2] == [["1"], ["2"]], "one pre-render per subject group, each located alone"
    assert result.crops["2"].found is False
    assert result.image != with_init.image


def _edit_job(previous: bytes, seed: int = 99, **edit: object) -> DrawJob:
    plan = two_subject_plan().model_copy(update={"edit": EditSpec(regenerate_subject_ids=["2"], **edit)})
    return DrawJob(plan=plan, references={"1": png("red")}, settings=fast_settings(seed=seed), previous_image=previous)


@pytest.mark.parametrize("which", ["tiny_drawer", "tiny_sdxl_drawer"])
def test_edit_keeps_previous_pixels_outside_the_regenerated_box(which: str, request: pytest.FixtureRequest) -> None:
    drawer: Drawer = request.getfixturevalue(which)
    first = drawer.draw(DrawJob(plan=two_subject_plan(), references={"1": png("red")}, settings=fast_settings()))
    edited = drawer.draw(_edit_job(first.image))
    before, after = _pixels(first.image), _pixels(edited.image)
    changed = np.abs(before - after).sum(-1) > 0
    inside = np.zeros_like(changed)
    inside[16:56, 56:88] = True  # subject 2's box (x 56..88, y 16..56) on latent cell edges
    assert not changed[~inside].any(), "pixels outside the regenerated box are kept exactly"
    assert changed[inside].mean() > 0.5


def test_edit_strength_below_one_pins_the_whole_picture_first(tiny_drawer: Drawer) -> None:
    plan = _edit_job(png("blue", (96, 64)), strength=0.5).plan
    previous = Image.new("RGB", (96, 64), "blue")
    latent_size = (64 // tiny_drawer.pipe.vae_scale_factor, 96 // tiny_drawer.pipe.vae_scale_factor)
    noise = torch.zeros(1, 4, *latent_size)
    settings = fast_settings()
    blends, regenerate = edit_blends(tiny_drawer.pipe, plan, settings, previous, noise)
    pinned, kept = blends
    assert pinned.until_step == 2 and bool((pinned.mask == 1).all())
    assert kept.until_step == settings.steps and kept.clean_at_end
    assert torch.equal(kept.mask, 1 - regenerate)
    tiny_drawer.pipe.scheduler.set_timesteps(settings.steps)
    latents = torch.randn(1, 4, *latent_size)
    last = kept(settings.steps - 1, latents)
    keep = kept.mask.bool().expand_as(latents)
    assert torch.equal(last[keep], kept.target.expand_as(latents)[keep]), "the kept region ends on the old latents"
    assert torch.equal(last[~keep], latents[~keep])
    middle = kept(0, latents)
    assert not torch.equal(middle[keep], latents[keep]) and torch.equal(middle[~keep], latents[~keep])
    (full,) = edit_blends(tiny_drawer.pipe, _edit_job(png("blue")).plan, settings, previous, noise)[0]
    assert full.until_step == settings.steps
