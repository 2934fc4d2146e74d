"""The drawer's mechanisms inside real (tiny) draws, pinned through observable state: the latents each step
callback sees and returns, the batches handed to the renders, the collage and mask handed to the blend, the
references encoded, and the inputs and outputs of the cross-attention processors. Expected values are
computed here from the seed, the VAE and the scheduler, independently of the drawer's own helpers."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from PIL import Image

import drawer.core as core
import drawer.render as render_module
import drawer.subject_init as subject_init
from drawer import Drawer, PlannedBoxLocator
from drawer.core import Drawer as DrawerClass
from drawer.render import RenderBatch
from drawer.stepping import StepCallbackChain
from drawer.subject_init import SubjectInitResult, fill_canvas, group_subjects, make_collage
from drawer.tiny import tiny_vae
from studio.draw import DrawJob, DrawSettings, SubjectCrop
from studio.geometry import Box
from studio.plan import EditSpec, PlanItem, TurnPlan
from studio.protocols import LocateTarget
from tests.drawer.conftest import fast_settings, png, two_subject_plan

SCALE = 2  # two_subject_plan at twice its size: every box edge on a latent cell edge, so coverage is exact
FACTOR = 2 ** (len(tiny_vae().config.block_out_channels) - 1)  # the tiny pipelines' vae_scale_factor
H, W = 64 * SCALE, 96 * SCALE
LATENT = (1, 4, H // FACTOR, W // FACTOR)


def _cells(box: Box) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (round(v) for v in box.to_xyxy())
    assert not any(v % FACTOR for v in (x0, y0, x1, y1)), "box edges on latent cell edges"
    return slice(y0 // FACTOR, y1 // FACTOR), slice(x0 // FACTOR, x1 // FACTOR)


BOX_1_CELLS, BOX_2_CELLS = (_cells(item.box) for item in two_subject_plan(scale=SCALE).items)


@dataclass
class Recording:
    """What the draws of one test handed around."""

    steps: list[list[tuple[int, torch.Tensor, torch.Tensor]]] = field(default_factory=list)
    """Per render, in order: (finished step, latents given to the callback, latents it returned)."""
    batches: list[RenderBatch] = field(default_factory=list)
    init: list[SubjectInitResult] = field(default_factory=list)
    encoded: list[list[Image.Image]] = field(default_factory=list)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    rec = Recording()

    class RecordingChain(StepCallbackChain):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.seen: list[tuple[int, torch.Tensor, torch.Tensor]] = []
            rec.steps.append(self.seen)

        def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
            before = callback_kwargs["latents"].clone()
            out = super().__call__(pipe, step, timestep, callback_kwargs)
            self.seen.append((step, before, out["latents"].clone()))
            return out

    real_render = render_module.render

    def recording_render(pipe: Any, batch: RenderBatch, progress: Any) -> list[Image.Image]:
        rec.batches.append(batch)
        return real_render(pipe, batch, progress)

    real_init = core.prerender_and_collage

    def recording_init(*args: Any, **kwargs: Any) -> SubjectInitResult:
        result = real_init(*args, **kwargs)
        rec.init.append(result)
        return result

    real_encode = core.encode_references

    def recording_encode(pipe: Any, images: list[Image.Image]) -> Any:
        rec.encoded.append(list(images))
        return real_encode(pipe, images)

    monkeypatch.setattr(render_module, "StepCallbackChain", RecordingChain)
    monkeypatch.setattr(core, "render", recording_render)
    monkeypatch.setattr(subject_init, "render", recording_render)
    monkeypatch.setattr(core, "prerender_and_collage", recording_init)
    monkeypatch.setattr(core, "encode_references", recording_encode)
    return rec


def seeded_noise(seed: int) -> torch.Tensor:
    return torch.randn(LATENT, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def vae_latents(drawer: Drawer, image: Image.Image) -> torch.Tensor:
    """Posterior mode of an RGB image, scaled for the UNet (the pixels mapped to [-1, 1] by hand)."""
    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    vae = drawer.pipe.vae
    return vae.encode(pixels.permute(2, 0, 1)[None]).latent_dist.mode() * vae.config.scaling_factor


def latent_cells(pixel_mask: np.ndarray) -> torch.Tensor:
    """A latent cell counts when any of its pixels is set."""
    cells = pixel_mask.reshape(H // FACTOR, FACTOR, W // FACTOR, FACTOR).any(axis=(1, 3))
    return torch.from_numpy(cells).float()[None, None]


def noised(drawer: Drawer, clean: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
    alpha = drawer.pipe.scheduler.alphas_cumprod[int(timestep)].to(clean.dtype)
    return alpha.sqrt() * clean + (1 - alpha).sqrt() * noise


def rectangle(box: Box) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    x0, y0, x1, y1 = (round(v) for v in box.to_xyxy())
    mask[y0:y1, x0:x1] = True
    return mask


# --- subject-initialized generation ------------------------------------------------------------------------


def test_subject_init_blends_the_collage_into_the_masked_latents_for_the_first_steps(
    tiny_drawer: Drawer, recording: Recording
) -> None:
    seed, strength, until, steps = 3, 0.6, 3, 5
    settings = fast_settings(
        seed=seed, steps=steps, subject_init_steps=until, subject_init_strength=strength, refine_step=None
    )
    tiny_drawer.draw(DrawJob(plan=two_subject_plan(scale=SCALE), settings=settings))
    (init,) = recording.init
    assert init.collage is not None and init.blend is not None
    mask = latent_cells(init.collage.mask)
    assert 0 < mask.mean() < 1
    goal = vae_latents(tiny_drawer, init.collage.image)
    blend_noise = seeded_noise(seed + 1)
    timesteps = tiny_drawer.pipe.scheduler.timesteps
    assert len(timesteps) == steps

    prerender, main = recording.batches
    start = seeded_noise(seed)
    expected_start = start + mask * strength * (noised(tiny_drawer, goal, blend_noise, timesteps[0]) - start)
    torch.testing.assert_close(main.latents, expected_start, rtol=0, atol=1e-5)
    assert torch.equal(prerender.latents, seeded_noise(seed).expand(2, -1, -1, -1)), "pre-renders start unblended"

    main_steps = recording.steps[1]
    assert [step for step, _, _ in main_steps] == list(range(steps))
    for step, before, after in main_steps:
        assert torch.equal(after * (1 - mask), before * (1 - mask)), f"step {step}: never outside the mask"
        if step + 1 < until:
            goal_now = noised(tiny_drawer, goal, blend_noise, timesteps[step + 1])
            expected = before + mask * strength * (goal_now - before)
            torch.testing.assert_close(after, expected, rtol=0, atol=1e-4, msg=f"step {step}")  # float32 reorderings
        else:
            assert torch.equal(after, before), f"step {step}: the blend stops after subject_init_steps"


def test_step_zero_blend_works_in_the_schedulers_own_scale(tiny_drawer: Drawer, recording: Recording) -> None:
    """Euler's initial latents are noise · σ_max; the drawer hands the pipeline unscaled latents."""
    seed, strength = 8, 0.7
    settings = fast_settings(seed=seed, scheduler="euler", subject_init_strength=strength)
    tiny_drawer.draw(DrawJob(plan=two_subject_plan(scale=SCALE), settings=settings))
    (init,) = recording.init
    assert init.collage is not None
    scheduler = tiny_drawer.pipe.scheduler
    sigma = float(scheduler.init_noise_sigma)
    assert sigma > 1.5
    mask = latent_cells(init.collage.mask)
    goal = scheduler.add_noise(
        vae_latents(tiny_drawer, init.collage.image), seeded_noise(seed + 1), scheduler.timesteps[:1]
    )
    start = seeded_noise(seed) * sigma
    expected = (start + mask * strength * (goal - start)) / sigma
    torch.testing.assert_close(recording.batches[-1].latents, expected, rtol=0, atol=1e-5)


def test_collage_is_pasted_into_the_turn_boxes_from_rescaled_prerenders(
    tiny_drawer: Drawer, recording: Recording
) -> None:
    plan = two_subject_plan(scale=SCALE)
    settings = fast_settings(seed=5, refine_step=1)
    tiny_drawer.draw(DrawJob(plan=plan, settings=settings))
    prerender, main = recording.batches
    for image, item in zip(prerender.images, plan.items, strict=True):
        assert image.boxes == fill_canvas([item.box], H, W), "each group's boxes fill the pre-render canvas"
        assert image.boxes != [item.box]
    assert prerender.refine_step is None and main.refine_step == 1
    (init,) = recording.init
    assert init.collage is not None
    assert init.collage.pasted == ["1", "2"], "larger box first"
    boxes = [rectangle(item.box) for item in plan.items]
    mask = init.collage.mask
    assert not (mask & ~(boxes[0] | boxes[1])).any(), "the cut-outs go into the turn's boxes, not the pre-render's"
    for box in boxes:
        assert mask[box].mean() > 0.95, "aspect kept, so each cut-out fills its box (to a pixel of rounding)"
    assert (np.asarray(init.collage.image)[~mask] == 127).all(), "neutral grey outside the pasted subjects"


class RecordingLocator(PlannedBoxLocator):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[LocateTarget]] = []

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]:
        self.calls.append(list(targets))
        return super().locate(image, targets)


def _decoded(data: bytes | None) -> np.ndarray:
    assert data is not None
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def component_plan() -> TurnPlan:
    """Two mothers; the second has a component (drawn in its mother's group)."""
    return TurnPlan(
        height=H,
        width=W,
        background="a park",
        items=[
            PlanItem(subject_id="1", phrase="a girl", box=Box(x=0, y=8, w=40, h=48).scaled(SCALE, SCALE)),
            PlanItem(
                subject_id="2", phrase="a dog with a collar", box=Box(x=48, y=16, w=40, h=40).scaled(SCALE, SCALE)
            ),
            PlanItem(subject_id="2-1", phrase="a blue collar", box=Box(x=56, y=24, w=24, h=8).scaled(SCALE, SCALE)),
        ],
    )


def test_prerender_crops_are_the_first_references_of_mothers_and_components(
    tiny_drawer: Drawer, recording: Recording
) -> None:
    plan = component_plan()
    locator = RecordingLocator()
    drawer = DrawerClass(tiny_drawer.pipe, tiny_drawer.preset, locator=locator)
    drawer.draw(DrawJob(plan=plan, references={"1": png("red")}, settings=fast_settings(seed=6)))

    prerender_calls = locator.calls[:2]
    assert [[t.subject_id for t in call] for call in prerender_calls] == [["1"], ["2", "2-1"]]
    rescaled = fill_canvas([plan.items[1].box, plan.items[2].box], H, W)
    assert [t.planned_box for t in prerender_calls[1]] == rescaled
    assert [t.parent_id for t in prerender_calls[1]] == [None, "2"]

    (init,) = recording.init
    first, second = recording.encoded
    assert len(first) == 1, "the user's reference of subject 1"
    assert len(second) == 3, "then the pre-render crops of the subjects that had none"
    assert np.array_equal(np.asarray(second[0]), np.asarray(first[0]))
    assert np.array_equal(np.asarray(second[1]), _decoded(init.crops["2"].crop))
    assert np.array_equal(np.asarray(second[2]), _decoded(init.crops["2-1"].crop))
    main = recording.batches[-1]
    assert main.images[0].reference_index == [0, 1, 2]
    assert main.references is not None and main.references.count == 3


def test_components_are_grouped_by_their_own_mother() -> None:
    plan = TurnPlan(
        height=H,
        width=W,
        items=[
            PlanItem(subject_id="1", phrase="a knight", box=Box(x=0, y=0, w=30, h=60)),
            PlanItem(subject_id="2", phrase="a horse", box=Box(x=30, y=0, w=30, h=60)),
            PlanItem(subject_id="2-1", phrase="a saddle", box=Box(x=35, y=20, w=10, h=10)),
            PlanItem(subject_id="1-1", phrase="a shield", box=Box(x=0, y=20, w=10, h=10)),
        ],
    )
    assert [[m.subject_id for m in g.members] for g in group_subjects(plan)] == [["1", "1-1"], ["2", "2-1"]]
    assert [[m.subject_id for m in g.members] for g in group_subjects(plan, only={"2"})] == [["2", "2-1"]]


def test_overlapping_cutouts_paste_the_smaller_box_last_whatever_the_order() -> None:
    big, small = Box(x=0, y=0, w=64, h=64), Box(x=16, y=16, w=32, h=32)
    everywhere = np.ones((64, 64), dtype=bool)
    red, blue = Image.new("RGB", (64, 64), (200, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 200))
    in_order = [("1", red, everywhere, big), ("2", blue, everywhere, small)]
    for cutouts in (in_order, in_order[::-1]):
        collage = make_collage(cutouts, 64, 64)
        assert collage.pasted == ["1", "2"]
        assert collage.image.getpixel((32, 32)) == (0, 0, 200) and collage.image.getpixel((4, 4)) == (200, 0, 0)


# --- attention inside real renders -----------------------------------------------------------------------


@dataclass
class AttnCall:
    layout: Any
    active: bool
    hidden: torch.Tensor
    text: torch.Tensor
    image_tokens: torch.Tensor | None
    output: torch.Tensor


@pytest.fixture
def first_attn2(tiny_drawer: Drawer) -> Iterator[tuple[Attention, list[AttnCall]]]:
    """The highest-resolution cross-attention layer, recording every call (inputs, layout, output)."""
    attn = tiny_drawer.pipe.unet.up_blocks[3].attentions[0].transformer_blocks[0].attn2
    calls: list[AttnCall] = []

    def hook(_module: Any, args: tuple, kwargs: dict[str, Any], output: torch.Tensor) -> None:
        context = kwargs.get("encoder_hidden_states")
        text, tokens = context if isinstance(context, tuple) else (context, None)
        layout = kwargs.get("layout")
        calls.append(
            AttnCall(
                layout=layout,
                active=bool(layout is not None and layout.active),
                hidden=args[0].clone(),
                text=text.clone(),
                image_tokens=None if tokens is None else tokens[0].clone(),
                output=output.clone(),
            )
        )

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    yield attn, calls
    handle.remove()


def plain_attention(attn: Attention, call: AttnCall) -> torch.Tensor:
    with torch.no_grad():
        return AttnProcessor2_0()(attn, call.hidden, call.text)


def test_refine_switch_turns_plain_at_refine_step_in_a_real_render(
    tiny_drawer: Drawer, first_attn2: tuple[Attention, list[AttnCall]]
) -> None:
    attn, calls = first_attn2
    steps, refine = 5, 2
    job = DrawJob(
        plan=two_subject_plan(scale=SCALE),
        references={"1": png("red")},
        settings=fast_settings(seed=2, steps=steps, refine_step=refine, subject_init_steps=1, prerender_steps=3),
    )
    tiny_drawer.draw(job)
    prerender, main = calls[:3], calls[3:]
    assert len(main) == steps, "one call of this layer per step"
    assert all(call.active for call in prerender), "the pre-render never switches to plain attention"
    assert [call.active for call in main] == [step < refine for step in range(steps)]
    for step, call in enumerate(main):
        plain = plain_attention(attn, call)
        if step < refine:
            assert not torch.allclose(call.output, plain, atol=1e-4), f"step {step} is regional"
        else:
            torch.testing.assert_close(call.output, plain, rtol=1e-5, atol=1e-6, msg=f"step {step} is plain")


def _heads_attention(attn: Attention, query: torch.Tensor, context: torch.Tensor, to_k: Any, to_v: Any) -> torch.Tensor:
    """Plain multi-head attention of [L, C] queries over one row's [S, D] context."""
    heads = attn.heads
    key, value = to_k(context), to_v(context)

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], heads, -1).transpose(0, 1)

    out = F.scaled_dot_product_attention(split(query), split(key), split(value))
    return out.transpose(0, 1).reshape(query.shape[0], -1)


@torch.no_grad()
def expected_regional_output(
    drawer: Drawer, attn: Attention, call: AttnCall, plan: TurnPlan, settings: DrawSettings
) -> torch.Tensor:
    """AutoStudio's equations (notes §1.3-1.4, with the §6.9 unconditional fix), written out densely for two
    non-overlapping, grid-aligned boxes that both have a reference."""
    f0, f1 = settings.fuse_scale
    g, s = settings.global_weight, settings.img_scale
    region, _ = drawer.pipe.encode_prompt(
        [plan.background, *(item.phrase for item in plan.items)], "cpu", 1, do_classifier_free_guidance=False
    )
    grid = torch.zeros(H // FACTOR, W // FACTOR)
    inside = []
    for cells in (BOX_1_CELLS, BOX_2_CELLS):
        box = grid.clone()
        box[cells] = 1
        inside.append(box.flatten()[:, None])
    union = inside[0] + inside[1]
    query = attn.to_q(call.hidden)
    processor = attn.processor
    ip_k, ip_v = processor.to_k_ip[0], processor.to_v_ip[0]
    assert call.image_tokens is not None

    def text_att(half: int, context: torch.Tensor) -> torch.Tensor:
        return _heads_attention(attn, query[half], context, attn.to_k, attn.to_v)

    def image_att(half: int, ref: int) -> torch.Tensor:
        return _heads_attention(attn, query[half], call.image_tokens[half, ref], ip_k, ip_v)

    background = text_att(1, region[0])
    cond = (1 - union) * (1 + s * f1) * background + union * (g * text_att(1, call.text[1]) + (1 - f0 - g) * background)
    uncond = text_att(0, call.text[0])
    for i in range(2):
        cond = cond + inside[i] * (f0 * text_att(1, region[1 + i]) + s * image_att(1, i))
        uncond = uncond + inside[i] * s * image_att(0, i)
    return attn.to_out[1](attn.to_out[0](torch.stack([uncond, cond])))


@torch.no_grad()
def reference_tokens(drawer: Drawer, colors: list[str]) -> torch.Tensor:
    """IP tokens of the references, [unconditional (zero embeds); conditional] halves, from the encoders."""
    pipe = drawer.pipe
    images = [Image.open(io.BytesIO(png(color))).convert("RGB") for color in colors]
    pixels = pipe.feature_extractor(images, return_tensors="pt").pixel_values
    positive = pipe.image_encoder(pixels).image_embeds[None]
    return pipe.unet.encoder_hid_proj([torch.cat([torch.zeros_like(positive), positive])])[0]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"global_weight": 0.9},
        {"img_scale": 0.2},
        {"fuse_scale": (0.8, 0.0)},
        {"fuse_scale": (1.2, 0.5)},
    ],
    ids=["defaults", "global_weight", "img_scale", "fuse_scale0", "fuse_scale1"],
)
def test_weight_settings_reach_the_main_batch_attention(
    tiny_drawer: Drawer, first_attn2: tuple[Attention, list[AttnCall]], changes: dict[str, Any]
) -> None:
    attn, calls = first_attn2
    plan = two_subject_plan(scale=SCALE)
    settings = fast_settings(seed=4, steps=1, subject_init=False, subject_init_steps=1, refine_step=None)
    settings = settings.model_copy(update=changes)
    tiny_drawer.draw(DrawJob(plan=plan, references={"1": png("red"), "2": png("blue")}, settings=settings))
    (call,) = calls
    assert call.active and call.image_tokens is not None
    torch.testing.assert_close(call.image_tokens, reference_tokens(tiny_drawer, ["red", "blue"]), rtol=1e-4, atol=1e-5)
    expected = expected_regional_output(tiny_drawer, attn, call, plan, settings)
    torch.testing.assert_close(call.output, expected, rtol=1e-4, atol=1e-5)


# --- editing -----------------------------------------------------------------------------------------------


def test_edit_pins_the_kept_latents_to_the_noised_previous_picture_every_step(
    tiny_drawer: Drawer, recording: Recording
) -> None:
    seed, steps = 21, 4
    ramp = np.linspace(0, 255, W, dtype=np.uint8)[None, :, None].repeat(H, 0).repeat(3, 2)
    previous = Image.fromarray(ramp, mode="RGB")
    buffer = io.BytesIO()
    previous.save(buffer, format="PNG")
    plan = two_subject_plan(scale=SCALE).model_copy(update={"edit": EditSpec(regenerate_subject_ids=["2"])})
    settings = fast_settings(seed=seed, steps=steps, subject_init=False)
    tiny_drawer.draw(DrawJob(plan=plan, settings=settings, previous_image=buffer.getvalue()))

    old = vae_latents(tiny_drawer, previous)
    blend_noise = seeded_noise(seed + 1)
    regenerate = torch.zeros(LATENT[2:])
    regenerate[BOX_2_CELLS] = 1
    keep = (regenerate == 0).expand(LATENT)
    timesteps = tiny_drawer.pipe.scheduler.timesteps
    (main,) = recording.batches
    start = seeded_noise(seed)
    torch.testing.assert_close(main.latents[keep], noised(tiny_drawer, old, blend_noise, timesteps[0])[keep])
    assert torch.equal(main.latents[~keep], start[~keep])
    (seen,) = recording.steps
    assert len(seen) == steps
    for step, before, after in seen:
        goal = old if step == steps - 1 else noised(tiny_drawer, old, blend_noise, timesteps[step + 1])
        # float32 rounding of (1 - M)·x + M·goal with the free latents x: about 1e-5 with the issue-11 tiny UNet
        torch.testing.assert_close(after[keep], goal[keep], rtol=0, atol=5e-5, msg=f"step {step}")
        assert torch.equal(after[~keep], before[~keep]), f"step {step}: the regenerated box denoises freely"


# --- fidelity choices (docs/drawer.md, "Fidelity to the official code") --------------------------------------


def test_global_and_group_prompts_name_mother_subjects_only(tiny_drawer: Drawer) -> None:
    from drawer.batches import main_batch, prerender_inputs

    pipe = tiny_drawer.pipe
    plan = component_plan()
    settings = fast_settings()
    noise = torch.zeros(LATENT)

    def encoded(prompt: str) -> torch.Tensor:
        return pipe.encode_prompt(prompt, "cpu", 1, do_classifier_free_guidance=False)[0][0]

    main = main_batch(pipe, plan, settings, None, {}, noise, [])
    expected = encoded("a park with a girl, a dog with a collar")
    torch.testing.assert_close(main.prompts.embeds[0], expected, rtol=1e-4, atol=1e-5)
    inputs = prerender_inputs(pipe, plan, settings, None, {}, noise)
    assert inputs is not None
    batch = inputs.batch
    assert (batch.height, batch.width) == (plan.height, plan.width), "pre-rendered at the turn's canvas"
    torch.testing.assert_close(batch.prompts.embeds[0], encoded("a park with a girl"), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        batch.prompts.embeds[1], encoded("a park with a dog with a collar"), rtol=1e-4, atol=1e-5
    )
    assert batch.images[1].subject_rows == [2, 3], "the component keeps its own phrase row in its group"


def test_edit_regenerates_extra_boxes_as_well_as_subject_boxes(tiny_drawer: Drawer) -> None:
    from drawer.editing import edit_blends

    extra = Box(x=0, y=0, w=4 * FACTOR, h=2 * FACTOR)
    edit = EditSpec(regenerate_subject_ids=["2"], regenerate_boxes=[extra])
    plan = two_subject_plan(scale=SCALE).model_copy(update={"edit": edit})
    previous = Image.new("RGB", (W, H), "blue")
    blends, regenerate = edit_blends(tiny_drawer.pipe, plan, fast_settings(), previous, torch.zeros(LATENT))
    expected = torch.zeros(LATENT[2:])
    expected[BOX_2_CELLS] = 1
    expected[_cells(extra)] = 1
    assert torch.equal(regenerate[0, 0], expected)
    assert torch.equal(blends[-1].mask[0, 0], 1 - expected)


def test_ancestral_sampler_noise_follows_the_seed(tiny_drawer: Drawer) -> None:
    job = DrawJob(
        plan=two_subject_plan(scale=SCALE), settings=fast_settings(seed=12, scheduler="euler_a", subject_init=False)
    )
    first = tiny_drawer.draw(job).image
    assert tiny_drawer.draw(job).image == first


def test_edit_pre_renders_only_the_regenerated_subjects(tiny_drawer: Drawer, recording: Recording) -> None:
    plan = two_subject_plan(scale=SCALE).model_copy(update={"edit": EditSpec(regenerate_subject_ids=["2"])})
    previous = png("blue", (W, H))
    tiny_drawer.draw(DrawJob(plan=plan, settings=fast_settings(seed=13), previous_image=previous))
    prerender, main = recording.batches
    assert prerender.images[0].boxes == fill_canvas([plan.items[1].box], H, W) and len(prerender.images) == 1
    assert main.images[0].reference_index == [None, 0], "only subject 2 got a crop as its reference"


def test_progress_never_passes_its_total_when_the_sampler_takes_an_extra_step(tiny_drawer: Drawer) -> None:
    """PNDM runs steps + 1 model calls; progress still ends at (total, total)."""
    seen: list[tuple[int, int]] = []
    job = DrawJob(
        plan=two_subject_plan(scale=SCALE), settings=fast_settings(seed=1, scheduler="pndm", subject_init=False)
    )
    tiny_drawer.draw(job, on_step=lambda step, total: seen.append((step, total)))
    assert len(seen) == job.settings.steps + 1
    assert all(step <= total for step, total in seen) and seen[-1] == (4, 4)
