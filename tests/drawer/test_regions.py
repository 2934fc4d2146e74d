"""Regions as masks in the Parallel-UNet and the region sampler (docs/regions.md), on the tiny models."""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler
from PIL import Image
from pydantic import ValidationError

from drawer import Drawer
from drawer.batches import main_batch
from drawer.conditioning import encode_references
from drawer.layout_masks import Grid, box_coverage
from drawer.parallel_attention import RegionImage, build_regional_context, unet_grids
from drawer.region_masks import canvas_weights, feather, grid_coverage, lerp_rows
from drawer.region_sampler import (
    RegionScheduler,
    StepRecord,
    centring_shift,
    pre_average,
    quantize,
    region_batch,
    region_masks,
    render_regions,
    suppress_leaks,
)
from drawer.render import render
from drawer.stepping import Progress
from drawer.subject_init import make_collage
from studio.draw import DrawJob, DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.regions import RegionMask, RegionSamplerSettings
from tests.drawer.conftest import fast_settings, png, two_subject_plan

H, W = 64, 96


def mask_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def left_half_png() -> bytes:
    array = np.zeros((H, W), dtype=np.uint8)
    array[:, : W // 2] = 255
    return mask_png(array)


def rectangle(box: Box) -> RegionMask:
    x0, y0, x1, y1 = box.to_xyxy()
    return RegionMask(polygon=[(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def masked_plan(plan: TurnPlan, **options: object) -> TurnPlan:
    """The same plan with each box given as its rectangle mask (and no box)."""
    items = [
        PlanItem(subject_id=i.subject_id, phrase=i.phrase, mask=rectangle(i.box), **options)  # type: ignore[arg-type]
        for i in plan.items
    ]
    return TurnPlan(
        height=plan.height, width=plan.width, background=plan.background, negative=plan.negative, items=items
    )


# --- §1: regions as masks --------------------------------------------------------------------------------------


def _phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def test_feathering_is_a_gaussian_of_the_given_sigma() -> None:
    step = torch.zeros(H, W, dtype=torch.float64)
    step[:, : W // 2] = 1.0
    sigma = 4.0
    blurred = feather(step, sigma)[0]
    expected = torch.tensor([_phi((W // 2 - (x + 0.5)) / sigma) for x in range(W)], dtype=torch.float64)
    assert torch.allclose(blurred[20:76], expected[20:76], atol=3e-3)
    assert torch.equal(feather(step, 0.0), step)


def test_soft_mask_row_weights_equal_the_feathered_mask_at_each_level(tiny_drawer: Drawer) -> None:
    """One masked subject with a reference: its image row is img_scale × the feathered mask's cell mean and its
    text row fuse_scale[0] × the same, at every attention grid; the feathered mask is the analytic Gaussian
    edge (Φ) of the left half, strength-scaled."""
    sigma, strength, img_scale, f0 = 4.0, 0.8, 0.5, 1.2
    item = PlanItem(
        subject_id="1", phrase="a cat", mask=RegionMask(png=left_half_png()), mask_std=sigma, mask_strength=strength
    )
    plan = TurnPlan(height=H, width=W, items=[item])
    weights = canvas_weights(plan.items[0], H, W)
    assert weights is not None
    analytic = torch.tensor([_phi((W // 2 - (x + 0.5)) / sigma) for x in range(W)], dtype=torch.float64)
    analytic = strength * analytic.expand(H, W)
    grids = unet_grids(tiny_drawer.pipe.unet, H, W, 8)
    spec = RegionImage(
        boxes=[plan.items[0].box], background_row=0, subject_rows=[1], reference_index=[0], masks=[weights]
    )
    region_text = torch.zeros(2, 77, 32)
    ctx = build_regional_context(
        [spec],
        region_text,
        height=H,
        width=W,
        grids=grids,
        fuse_scale=(f0, 0.0),
        global_weight=0.3,
        img_scale=img_scale,
        guided=False,
        num_references=1,
        sparse=False,
    )
    assert len(grids) >= 2
    for grid in grids:
        cells = grid_coverage(analytic, grid, H, W).flatten()
        _, image_weight = ctx.image_groups[0].at(grid.tokens)
        assert torch.allclose(image_weight[0, :, 0].double(), img_scale * cells, atol=3e-3)
        text_group = ctx.text_groups[0]
        _, weight = text_group.at(grid.tokens)
        subject = text_group.source.tolist().index(2)  # sources: global 0, background 1, subject 2
        assert torch.allclose(weight[subject, :, 0].double(), f0 * cells, atol=3e-3)
        assert not torch.allclose(weight[subject, :, 0].double(), f0 * (cells > 0).double(), atol=1e-2)


def test_a_box_and_its_rectangle_mask_give_identical_weights_and_pictures(tiny_drawer: Drawer) -> None:
    boxes = two_subject_plan()
    masks = masked_plan(boxes)
    assert [i.box for i in masks.items] == [i.box for i in boxes.items]
    grids = unet_grids(tiny_drawer.pipe.unet, H, W, 8)
    for grid in grids:
        for b, m in zip(boxes.items, masks.items, strict=True):
            weights = canvas_weights(m, H, W)
            assert weights is not None  # the mask path is taken
            assert torch.equal(grid_coverage(weights, grid, H, W), box_coverage(b.box, grid, H, W))
    settings = fast_settings()
    first = tiny_drawer.draw(DrawJob(plan=boxes, references={"1": png("red")}, settings=settings)).image
    second = tiny_drawer.draw(DrawJob(plan=masks, references={"1": png("red")}, settings=settings)).image
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(first))), np.asarray(Image.open(io.BytesIO(second))))


def test_a_soft_mask_changes_the_picture(tiny_drawer: Drawer) -> None:
    settings = fast_settings()
    plain = tiny_drawer.draw(DrawJob(plan=two_subject_plan(), settings=settings)).image
    soft = tiny_drawer.draw(DrawJob(plan=masked_plan(two_subject_plan(), mask_std=6.0), settings=settings)).image
    assert plain != soft


def test_region_negative_prompt_rows_share_the_unconditional_half(tiny_drawer: Drawer) -> None:
    plan = two_subject_plan()
    plan.items[0] = plan.items[0].model_copy(update={"negative": "ugly hands"})
    batch = main_batch(tiny_drawer.pipe, plan, fast_settings(), None, {}, torch.zeros(1, 4, 8, 12), [])
    spec = batch.images[0]
    assert spec.negative_rows == [3, None] and batch.region_text.shape[0] == 4
    grids = unet_grids(tiny_drawer.pipe.unet, H, W, 8)
    ctx = build_regional_context(
        batch.images,
        batch.region_text,
        height=H,
        width=W,
        grids=grids,
        fuse_scale=(1.2, 0.0),
        global_weight=0.3,
        img_scale=0.0,
        guided=True,
        num_references=1,
        sparse=False,
    )
    group = ctx.text_groups[0]
    sources = group.source.tolist()
    finest = grids[0]
    share = box_coverage(plan.items[0].box, finest, H, W).flatten()
    _, weight = group.at(finest.tokens)
    uncond, negative = sources.index(0), sources.index(2 + 3)  # pipeline rows: uncond 0, cond 1; region rows after
    assert torch.allclose(weight[uncond, :, 0].double(), 1.0 - share)
    assert torch.allclose(weight[negative, :, 0].double(), share)


def test_prompt_strength_lerps_region_rows_toward_the_background(tiny_drawer: Drawer) -> None:
    rows = torch.randn(3, 77, 32)
    out = lerp_rows(rows, 0, [1, 2], [0.0, 0.25])
    assert torch.equal(out[1], rows[0]) and torch.allclose(out[2], rows[0] + 0.25 * (rows[2] - rows[0]))
    assert lerp_rows(rows, 0, [1, 2], [1.0, 1.0]) is rows
    plan = two_subject_plan()
    plan.items[1] = plan.items[1].model_copy(update={"prompt_strength": 0.5})
    full = main_batch(tiny_drawer.pipe, two_subject_plan(), fast_settings(), None, {}, torch.zeros(1, 4, 8, 12), [])
    half = main_batch(tiny_drawer.pipe, plan, fast_settings(), None, {}, torch.zeros(1, 4, 8, 12), [])
    assert torch.equal(half.region_text[1], full.region_text[1])
    assert torch.allclose(half.region_text[2], torch.lerp(full.region_text[0], full.region_text[2], 0.5))


def test_subject_init_pastes_only_inside_the_region_mask() -> None:
    image = Image.new("RGB", (W, H), (200, 10, 10))
    cutout = np.ones((H, W), dtype=bool)
    target = Box(x=0, y=0, w=W, h=H)
    region = np.zeros((H, W), dtype=bool)
    region[10:40, 20:60] = True
    free = make_collage([("1", image, cutout, target)], H, W)
    held = make_collage([("1", image, cutout, target)], H, W, regions={"1": region})
    assert free.mask.all()
    assert np.array_equal(held.mask, region)
    assert (np.asarray(held.image)[~region] != (200, 10, 10)).any(axis=-1).all()


# --- §2: the region sampler ----------------------------------------------------------------------------------


def test_pre_averaging_is_exact_where_one_region_holds_the_mask() -> None:
    x0 = torch.randn(3, 4, 6, 6)
    masks = torch.zeros(3, 1, 6, 6)
    masks[0] = 1.0
    masks[0, :, :3] = 0.0
    masks[2, :, :3] = 1.0  # top half: only region 2
    out = pre_average(x0, masks)
    assert torch.equal(out[0, :, :3], x0[2, :, :3])
    assert torch.equal(out[0, :, 3:], x0[0, :, 3:])
    masks[1, :, :3] = 1.0
    assert torch.allclose(pre_average(x0, masks)[0, :, :3], (x0[1, :, :3] + x0[2, :, :3]) / 2)


def test_quantized_masks_grow_as_noise_decreases() -> None:
    masks = torch.linspace(0.0, 1.0, 101).reshape(1, 1, 1, 101)
    levels = [0.99, 0.9, 0.7, 0.4, 0.1]
    for mode in ("discrete", "continuous", "semi-continuous"):
        sums = [float(quantize(masks, levels, k, mode).sum()) for k in range(len(levels))]
        assert all(b > a for a, b in itertools.pairwise(sums)), (mode, sums)
    assert set(quantize(masks, levels, 2, "discrete").unique().tolist()) == {0.0, 1.0}
    last = quantize(masks, levels, 4, "semi-continuous")
    assert 0 < float(last[0, 0, 0, 5]) < 1  # continuous at the last step
    assert torch.equal(quantize(masks, levels, 3, "semi-continuous"), quantize(masks, levels, 3, "discrete"))


def test_leak_suppression_lowers_the_mask_where_the_prediction_stays_background() -> None:
    background = torch.randn(1, 4, 6, 6)
    x0 = background.clone()
    x0[..., 3:] += 3.0  # the region drew something only on the right
    mask = torch.ones(1, 1, 6, 6)
    out = suppress_leaks(mask, x0, background, 0.2)
    assert torch.equal(out[..., :3], torch.zeros_like(out[..., :3]))
    assert (out[..., 3:] > 0.99).all()


def test_centring_moves_the_mask_box_to_the_middle() -> None:
    mask = torch.zeros(1, 8, 12, dtype=torch.bool)
    mask[0, 0:2, 0:4] = True
    dy, dx = centring_shift(mask)
    rolled = torch.roll(mask, (dy, dx), dims=(-2, -1))
    rows, cols = torch.nonzero(rolled[0], as_tuple=True)
    assert (int(rows.min()) + int(rows.max()) + 1) / 2 == 4 and (int(cols.min()) + int(cols.max()) + 1) / 2 == 6


def _soft_plan() -> TurnPlan:
    plan = two_subject_plan()
    items = [plan.items[0].model_copy(update={"mask_std": 6.0}), plan.items[1]]
    return plan.model_copy(update={"items": items})


def _sampler_run(drawer: Drawer, plan: TurnPlan, **overrides: object) -> tuple[list[StepRecord], Image.Image]:
    values: dict[str, object] = dict(sampler="regions", steps=6, mechanisms=["regional", "subject_reference"])
    values.update(overrides)
    settings = fast_settings(**values)
    pipe = drawer.pipe
    drawer._use_scheduler(settings.scheduler)
    embeds = encode_references(pipe, [Image.new("RGB", (30, 50), "red")])
    noise = torch.randn((1, 4, H // 8, W // 8), generator=torch.Generator().manual_seed(5))
    batch = main_batch(pipe, plan, settings, embeds, {"1": 0}, noise, [], seed=5)
    records: list[StepRecord] = []
    image = render_regions(pipe, batch, plan, settings, Progress(settings.steps, None, None), records=records)
    return records, image


@pytest.fixture(scope="module")
def sampler_records(tiny_drawer: Drawer) -> list[StepRecord]:
    return _sampler_run(
        tiny_drawer, _soft_plan(), regions=RegionSamplerSettings(bootstrap_steps=2, leak_sensitivity=10.0)
    )[0]


def test_sampler_pre_averages_on_the_denoised_estimates(sampler_records: list[StepRecord]) -> None:
    checked = 0
    for record in sampler_records:
        masks, x0 = record.masks, record.x0
        for j in range(masks.shape[0]):
            others = torch.cat([masks[:j], masks[j + 1 :]]).sum(0)
            alone = ((masks[j] == 1.0) & (others == 0))[0]
            if alone.any():
                assert torch.equal(record.blended[0][:, alone], x0[j][:, alone])
                checked += 1
    assert checked >= len(sampler_records)


def test_sampler_masks_grow_over_the_steps(sampler_records: list[StepRecord]) -> None:
    soft = [float(r.quantized[1].sum()) for r in sampler_records]
    assert all(b >= a for a, b in itertools.pairwise(soft)) and soft[-1] > soft[0]


def test_bootstrapping_only_in_the_first_steps(sampler_records: list[StepRecord]) -> None:
    assert [r.bootstrapped for r in sampler_records] == [True, True, False, False, False, False]
    for record in sampler_records:
        rows_differ = not torch.equal(record.inputs[1], record.inputs[0])
        assert rows_differ == record.bootstrapped
    for record in sampler_records[:2]:
        assert (record.masks[1:] <= record.quantized[1:]).all()
        assert (record.masks[1:] < record.quantized[1:]).any()  # leak suppression acted
    for record in sampler_records[2:]:
        assert torch.equal(record.masks, record.quantized)


def test_bootstrapped_rows_are_centred(tiny_drawer: Drawer) -> None:
    plan = two_subject_plan()
    centred, _ = _sampler_run(tiny_drawer, plan, steps=2, refine_step=2)
    kept, _ = _sampler_run(tiny_drawer, plan, steps=2, refine_step=2, regions=RegionSamplerSettings(centre=False))
    masks = region_masks(plan, 8, 0.3)
    for j in (1, 2):
        shift = centring_shift(masks[j] > 0)
        assert shift != (0, 0)
        assert torch.equal(centred[0].inputs[j], torch.roll(kept[0].inputs[j], shift, dims=(-2, -1)))


def test_one_region_reproduces_the_plain_pipeline(tiny_drawer: Drawer) -> None:
    """With no items the sampler's blend is the background's own prediction: the x0 round trip and re-noising
    through the scheduler's own step give the plain pipeline's result."""
    plan = TurnPlan(height=H, width=W, background="a quiet lake", negative="blurry")
    pipe = tiny_drawer.pipe
    lcm = LCMScheduler.from_config(tiny_drawer._scheduler_config)
    for scheduler in ("ddim", "euler", "dpm++", "lcm"):
        settings = fast_settings(
            sampler="regions", mechanisms=[], steps=4, **({} if scheduler == "lcm" else {"scheduler": scheduler})
        )
        tiny_drawer._use_scheduler(settings.scheduler)
        if scheduler == "lcm":  # the fast mode's scheduler: its step adds fresh noise (seeded by the render)
            pipe.scheduler = lcm
        noise = torch.randn((1, 4, H // 8, W // 8), generator=torch.Generator().manual_seed(2))
        batch = main_batch(pipe, plan, settings, encode_references(pipe, []), {}, noise, [], seed=2)
        regions = region_batch(pipe, batch, plan, "")
        wrapper = RegionScheduler(
            pipe.scheduler, region_masks(plan, 8, 0.3), settings.regions, torch.zeros(1, 4, H // 8, W // 8), noise
        )
        original = pipe.scheduler
        plain = render(pipe, regions, Progress(4, None, None), output_type="latent")
        pipe.scheduler = wrapper
        try:
            ours = render(pipe, regions, Progress(4, None, None), output_type="latent")
        finally:
            pipe.scheduler = original
        assert torch.allclose(ours, plain, atol=1e-4), scheduler
    tiny_drawer._use_scheduler("ddim")


def test_sampler_uses_the_subjects_reference_rows_when_asked(tiny_drawer: Drawer) -> None:
    plan = two_subject_plan()
    pipe = tiny_drawer.pipe
    embeds = encode_references(pipe, [Image.new("RGB", (30, 50), "red")])
    for mechanisms, expect in ((("regional", "subject_reference"), [[], [0], []]), (("regional",), [[], [], []])):
        settings = fast_settings(sampler="regions", mechanisms=list(mechanisms))
        batch = main_batch(pipe, plan, settings, embeds, {"1": 0}, torch.zeros(1, 4, 8, 12), [])
        regions = region_batch(pipe, batch, plan, "")
        assert [image.reference_index for image in regions.images] == expect
        assert regions.prompts.embeds.shape[0] == 3 and regions.latents.shape[0] == 3
    with_refs = _sampler_run(tiny_drawer, plan, steps=3)[1]
    without = _sampler_run(tiny_drawer, plan, steps=3, mechanisms=["regional"])[1]
    assert np.asarray(with_refs).tolist() != np.asarray(without).tolist()


def test_the_drawer_runs_the_sampler_from_settings(tiny_drawer: Drawer, tiny_sdxl_drawer: Drawer) -> None:
    for drawer in (tiny_drawer, tiny_sdxl_drawer):
        job = DrawJob(plan=_soft_plan(), references={"1": png("red")}, settings=fast_settings(sampler="regions"))
        regions = drawer.draw(job)
        default = drawer.draw(job.model_copy(update={"settings": fast_settings()}))
        assert (regions.width, regions.height) == (W, H) and regions.image != default.image
        assert drawer.pipe.scheduler is drawer._schedulers["ddim"]


def test_sampler_settings_are_validated() -> None:
    assert DrawSettings().sampler == "default"
    with pytest.raises(ValidationError, match="shared_attention"):
        DrawSettings(sampler="regions", mechanisms=["regional", "shared_attention"])
    with pytest.raises(ValidationError, match="bootstrap_steps"):
        DrawSettings(sampler="regions", steps=2, regions={"bootstrap_steps": 3})
    with pytest.raises(ValidationError, match="sampler"):
        DrawSettings(sampler="multidiffusion")
    with pytest.raises(ValidationError):
        DrawSettings(regions={"quantize": "fuzzy"})


def test_grid_coverage_is_the_cell_mean() -> None:
    weights = torch.rand(20, 28, dtype=torch.float64)
    grid = Grid(3, 4, 8)  # the last row and column of cells are clipped by the canvas
    out = grid_coverage(weights, grid, 20, 28)
    assert torch.allclose(out[2, 3], weights[16:20, 24:28].mean())
    assert torch.allclose(out[0, 0], weights[0:8, 0:8].mean())


def test_the_drawer_hands_the_region_masks_to_the_collage(tiny_drawer: Drawer, monkeypatch: pytest.MonkeyPatch) -> None:
    import drawer.subject_init as subject_init

    seen: list[dict | None] = []
    real = subject_init.make_collage

    def spy(cutouts, height, width, regions=None):  # type: ignore[no-untyped-def]
        seen.append(regions)
        return real(cutouts, height, width, regions=regions)

    monkeypatch.setattr(subject_init, "make_collage", spy)
    plan = two_subject_plan()
    triangle = RegionMask(polygon=[(0, 8), (40, 8), (0, 56)])
    plan.items[0] = PlanItem(subject_id="1", phrase=plan.items[0].phrase, mask=triangle)
    plan = TurnPlan.model_validate(plan.model_dump())
    tiny_drawer.draw(DrawJob(plan=plan, settings=fast_settings()))
    assert seen and set(seen[0]) == {"1"}
    assert np.array_equal(seen[0]["1"], triangle.raster(H, W) >= 0.5)


def test_sampler_region_rows_carry_prompt_strength_and_region_negatives(tiny_sdxl_drawer: Drawer) -> None:
    pipe = tiny_sdxl_drawer.pipe
    plan = two_subject_plan()
    plan.items[0] = plan.items[0].model_copy(update={"prompt_strength": 0.0, "negative": "ugly"})
    settings = fast_settings(sampler="regions")
    batch = main_batch(pipe, plan, settings, encode_references(pipe, []), {}, torch.zeros(1, 4, 8, 12), [])
    rows = region_batch(pipe, batch, plan, "").prompts
    plain = region_batch(pipe, batch, two_subject_plan(), "").prompts
    assert rows.pooled is not None and rows.negative_pooled is not None
    for tensor in (rows.embeds, rows.negative, rows.pooled, rows.negative_pooled):
        assert torch.equal(tensor[1], tensor[0])  # strength 0: the background's row, pooled included
    assert torch.equal(rows.embeds[2], plain.embeds[2]) and torch.equal(rows.negative[2], plain.negative[2])


@pytest.mark.parametrize("name", ["ddim", "euler", "dpm++", "euler_a", "lcm"])
def test_coefficients_follow_the_schedulers_own_noising(tiny_drawer: Drawer, name: str) -> None:
    """Step k's latent is a_k·x0 + b_k·ε exactly as the scheduler's own add_noise builds it."""
    from drawer.loading import make_scheduler

    config = tiny_drawer._scheduler_config
    inner = LCMScheduler.from_config(config) if name == "lcm" else make_scheduler(name, config)
    masks = torch.ones(1, 1, 2, 2)
    wrapper = RegionScheduler(inner, masks, RegionSamplerSettings(), torch.zeros(1, 4, 2, 2), torch.zeros(1, 4, 2, 2))
    wrapper.set_timesteps(6)
    x0, eps = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2)
    for k, t in enumerate(wrapper.timesteps):
        a, b = wrapper.coefficients(k)
        expected = inner.add_noise(x0, eps, t.reshape(1))
        torch.testing.assert_close(a * x0 + b * eps, expected, rtol=1e-5, atol=1e-5)
    assert wrapper.levels == sorted(wrapper.levels, reverse=True)


def test_bootstrapped_predictions_are_rolled_back_before_the_blend() -> None:
    """A 'UNet' that predicts ε = 0 makes x0_j = input_j / a: where item j alone holds mask, the blend must be the
    shared latent's own x0 (its rolled, white-backed input moved back into place), not the rolled input."""
    from diffusers import DDIMScheduler

    inner = DDIMScheduler()
    masks = torch.zeros(2, 1, 8, 8)
    masks[0] = 1.0
    masks[1, :, 0:2, 0:2] = 1.0  # item 1 in the top-left corner: centring moves it
    masks[0, :, 0:2, 0:2] = 0.0
    settings = RegionSamplerSettings(leak_sensitivity=1e-6)  # leaks: no suppression where x0 differs from white
    white = torch.full((1, 4, 8, 8), 5.0)
    wrapper = RegionScheduler(inner, masks, settings, white, torch.zeros(1, 4, 8, 8), record=True)
    wrapper.set_timesteps(4)
    shared = torch.randn(1, 4, 8, 8).expand(2, 4, 8, 8)
    rows = wrapper.scale_model_input(shared, wrapper.timesteps[0])
    assert not torch.equal(rows[1], shared[1])  # bootstrapped and rolled
    wrapper.step(torch.zeros_like(rows), wrapper.timesteps[0], shared)
    record = wrapper.records[0]
    a, _ = wrapper.coefficients(0)
    torch.testing.assert_close(record.x0[1, :, 0:2, 0:2], shared[0, :, 0:2, 0:2] / a)  # back in place
    torch.testing.assert_close(record.blended[0, :, 0:2, 0:2], shared[0, :, 0:2, 0:2] / a)


def test_region_masks_apply_cover_alpha_under_later_regions() -> None:
    plan = TurnPlan(
        height=H,
        width=W,
        items=[
            PlanItem(subject_id="1", phrase="a", box=Box(x=0, y=0, w=48, h=64)),
            PlanItem(subject_id="2", phrase="b", box=Box(x=32, y=0, w=32, h=64), mask_strength=0.5),
        ],
    )
    masks = region_masks(plan, 8, 0.3)[:, 0]  # [background, item 1, item 2] on the 8 x 12 latent grid
    assert masks.shape == (3, 8, 12)
    assert torch.allclose(masks[0, :, 8:], torch.ones(8, 4)) and torch.allclose(
        masks[0, :, :8], torch.full((8, 8), 0.3)
    )
    assert torch.allclose(masks[1, :, :4], torch.ones(8, 4)) and torch.allclose(
        masks[1, :, 4:6], torch.full((8, 2), 0.3)
    )
    assert torch.equal(masks[1, :, 6:], torch.zeros(8, 6))
    assert torch.allclose(masks[2, :, 4:8], torch.full((8, 4), 0.5)) and torch.equal(masks[2, :, :4], torch.zeros(8, 4))
