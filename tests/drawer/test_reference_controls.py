"""Reference controls (docs/reference_controls.md): the step window and reference_scale as the per-row weights
the processors receive, several references per subject (average / tokens), and the global style reference."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0
from PIL import Image

from drawer import Drawer
from drawer import parallel_attention as pa
from drawer.conditioning import encode_references
from drawer.mechanisms import build_stack
from drawer.mechanisms.global_reference import KWARG, GlobalReferenceContext
from drawer.parallel_attention import LAYOUT_KWARG
from drawer.reference_controls import (
    CanvasReferences,
    ReferencePlan,
    SubjectReferences,
    step_scale,
)
from studio.draw import DrawJob
from studio.plan import TurnPlan
from studio.reference_controls import ReferenceControls
from tests.drawer.conftest import fast_settings, png, two_subject_plan


def _image(color: str) -> Image.Image:
    return Image.open(io.BytesIO(png(color))).convert("RGB")


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def _plan(**item_1: Any) -> TurnPlan:
    plan = two_subject_plan()
    first = plan.items[0].model_copy(update=item_1)
    return plan.model_copy(update={"items": [first, plan.items[1]]})


def _settings(steps: int = 5, **overrides: Any) -> Any:
    return fast_settings(steps=steps, subject_init=False, refine_step=None, **overrides)


# --- the step window and the scale, as the weights the processor receives ----------------------------


def test_step_scale_is_the_scale_inside_the_window_and_zero_outside() -> None:
    controls = ReferenceControls(reference_scale=0.5, reference_window=(0.4, 0.8))
    assert [step_scale(controls, step, 5) for step in range(5)] == [0.0, 0.0, 0.5, 0.5, 0.0]
    assert [step_scale(ReferenceControls(), step, 3) for step in range(3)] == [1.0, 1.0, 1.0]


@pytest.fixture
def image_row_weights(tiny_drawer: Drawer) -> Iterator[list[dict[int, float]]]:
    """Per call of one cross-attention layer (once per step): the total image-row weight per reference slot
    that the processor receives through its `layout` context."""
    attn = tiny_drawer.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2
    seen: list[dict[int, float]] = []

    def hook(_module: Any, _args: tuple, kwargs: dict[str, Any]) -> None:
        layout = kwargs.get(LAYOUT_KWARG)
        if layout is None or not layout.active:
            return
        totals: dict[int, float] = {}
        for group in layout.image_groups:
            tokens = next(iter(group.weights))  # any grid: the same rows
            per_row = group.weights[tokens].sum(dim=(1, 2)).double()
            for source, total in zip(group.source.tolist(), per_row.tolist(), strict=True):
                slot = source % layout.num_references
                totals[slot] = totals.get(slot, 0.0) + total
        seen.append(totals)

    handle = attn.register_forward_pre_hook(hook, with_kwargs=True)
    yield seen
    handle.remove()


def test_step_window_turns_a_subjects_image_rows_on_and_off_at_the_right_steps(
    tiny_drawer: Drawer, image_row_weights: list[dict[int, float]]
) -> None:
    job = DrawJob(
        plan=_plan(reference_window=(0.4, 0.8)),
        references={"1": png("red"), "2": png("blue")},
        settings=_settings(steps=5),
    )
    tiny_drawer.draw(job)
    assert len(image_row_weights) == 5, "one call of the layer per step"
    first = [w[0] for w in image_row_weights]
    second = [w[1] for w in image_row_weights]
    on = max(first)
    assert on > 0
    assert first == [0.0, 0.0, on, on, 0.0], "subject 1's rows only at steps 2 and 3 (0.4 <= i/5 < 0.8)"
    assert all(v == second[0] > 0 for v in second), "subject 2 (no window) keeps its rows at every step"


def test_reference_scale_scales_that_subjects_rows_only(
    tiny_drawer: Drawer, image_row_weights: list[dict[int, float]]
) -> None:
    refs = {"1": png("red"), "2": png("blue")}
    tiny_drawer.draw(DrawJob(plan=_plan(), references=refs, settings=_settings(steps=2)))
    base = image_row_weights[:]
    image_row_weights.clear()
    tiny_drawer.draw(DrawJob(plan=_plan(reference_scale=0.25), references=refs, settings=_settings(steps=2)))
    for before, after in zip(base, image_row_weights, strict=True):
        assert after[0] == pytest.approx(0.25 * before[0], rel=1e-6) and before[0] > 0
        assert after[1] == before[1]


def test_memory_controls_reach_the_rows_and_the_plan_item_overrides_them(
    tiny_drawer: Drawer, image_row_weights: list[dict[int, float]]
) -> None:
    refs = {"1": png("red"), "2": png("blue")}
    memory = {"1": ReferenceControls(reference_scale=0.5), "2": ReferenceControls(reference_scale=0.0)}
    tiny_drawer.draw(
        DrawJob(plan=_plan(reference_scale=2.0), references=refs, reference_controls=memory, settings=_settings(2))
    )
    plain = image_row_weights[0]
    image_row_weights.clear()
    tiny_drawer.draw(DrawJob(plan=_plan(), references=refs, reference_controls=memory, settings=_settings(2)))
    assert image_row_weights[0][0] == pytest.approx(plain[0] / 4, rel=1e-6), "item 2.0 overrides memory 0.5"
    assert image_row_weights[0][1] == 0.0 == plain[1], "memory's 0 for subject 2"


def test_scale_zero_draws_the_picture_of_no_reference(tiny_drawer: Drawer) -> None:
    none = tiny_drawer.draw(DrawJob(plan=_plan(), references={"2": png("blue")}, settings=_settings(3)))
    zero = tiny_drawer.draw(
        DrawJob(plan=_plan(reference_scale=0.0), references={"1": png("red"), "2": png("blue")}, settings=_settings(3))
    )
    full = tiny_drawer.draw(
        DrawJob(plan=_plan(), references={"1": png("red"), "2": png("blue")}, settings=_settings(3))
    )
    assert np.abs(_pixels(zero.image) - _pixels(none.image)).max() <= 1
    assert np.abs(_pixels(full.image) - _pixels(none.image)).max() > 1


def test_default_controls_install_nothing_and_leave_the_weights_alone(tiny_drawer: Drawer) -> None:
    refs = SubjectReferences(images={"1": [_image("red")]}, controls={"1": ReferenceControls()})
    embeds, first, plan = refs.encode(tiny_drawer.pipe)
    assert torch.equal(embeds.positive, encode_references(tiny_drawer.pipe, [_image("red")]).positive)
    assert first == {"1": 0} and plan.is_trivial


# --- several references per subject ---------------------------------------------------------------------


def test_average_combines_the_embeddings_into_one_slot_and_tokens_keeps_one_slot_per_image(
    tiny_drawer: Drawer,
) -> None:
    pipe = tiny_drawer.pipe
    red, navy, blue = _image("red"), _image("navy"), _image("blue")
    single = encode_references(pipe, [red, navy, blue])
    average = SubjectReferences(
        images={"1": [red, navy], "2": [blue]}, controls={"1": ReferenceControls(reference_combine="average")}
    )
    embeds, first, plan = average.encode(pipe)
    assert embeds.count == 2 and first == {"1": 0, "2": 1} and plan.slots == {0: [0], 1: [1]}
    torch.testing.assert_close(embeds.positive[:, 0], single.positive[:, :2].mean(dim=1))
    torch.testing.assert_close(embeds.positive[:, 1], single.positive[:, 2])
    tokens = SubjectReferences(
        images={"1": [red, navy], "2": [blue]}, controls={"1": ReferenceControls(reference_combine="tokens")}
    )
    embeds, first, plan = tokens.encode(pipe)
    assert embeds.count == 3 and first == {"1": 0, "2": 2} and plan.slots == {0: [0, 1], 2: [2]}
    torch.testing.assert_close(embeds.positive, single.positive)


def test_each_of_two_references_changes_the_averaged_embedding(tiny_drawer: Drawer) -> None:
    pipe = tiny_drawer.pipe

    def embed(a: str, b: str) -> torch.Tensor:
        return SubjectReferences(images={"1": [_image(a), _image(b)]}).encode(pipe)[0].positive

    base = embed("red", "navy")
    assert not torch.allclose(embed("green", "navy"), base)
    assert not torch.allclose(embed("red", "yellow"), base)


@pytest.fixture
def image_sources(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes of the image rows' key/value inputs the processor selects ([rows, tokens, C])."""
    shapes: list[tuple[int, ...]] = []
    original = pa.RowGroup.select_sources

    def spy(self: pa.RowGroup, flat: torch.Tensor) -> torch.Tensor:
        out = original(self, flat)
        shapes.append((tuple(out.shape), flat.shape[1]))  # type: ignore[arg-type]
        return out

    monkeypatch.setattr(pa.RowGroup, "select_sources", spy)
    return shapes  # type: ignore[return-value]


@pytest.mark.parametrize("combine", ["average", "tokens"])
def test_two_references_for_one_subject_both_influence_it(
    tiny_drawer: Drawer, combine: str, image_sources: list[Any]
) -> None:
    def draw(first: str, second: str) -> np.ndarray:
        job = DrawJob(
            plan=_plan(reference_combine=combine),
            references={"1": png(first)},
            more_references={"1": [png(second)]},
            settings=_settings(2),
        )
        return _pixels(tiny_drawer.draw(job).image)

    base = draw("red", "navy")
    assert np.abs(draw("green", "navy") - base).max() > 1, "the first reference acts"
    assert np.abs(draw("red", "yellow") - base).max() > 1, "the second reference acts"
    token_counts = {shape[1] // per_image for shape, per_image in image_sources}
    assert token_counts == ({2} if combine == "tokens" else {1}), "tokens: both images' tokens in one row"


def test_tokens_of_two_identical_references_are_one_reference(tiny_drawer: Drawer) -> None:
    """Duplicated keys and values under one softmax leave attention unchanged: `tokens` is one softmax over
    the images' tokens side by side (not two rows summed)."""

    def draw(**job: Any) -> np.ndarray:
        return _pixels(
            tiny_drawer.draw(DrawJob(plan=_plan(reference_combine="tokens"), settings=_settings(2), **job)).image
        )

    once = draw(references={"1": png("red")})
    twice = draw(references={"1": png("red")}, more_references={"1": [png("red")]})
    other = draw(references={"1": png("red")}, more_references={"1": [png("navy")]})
    assert np.abs(twice - once).max() <= 1
    assert np.abs(other - once).max() > 1


# --- the global style reference --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attn(tiny_drawer: Drawer) -> Attention:
    return tiny_drawer.pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2


def _style_batch(drawer: Drawer, scale: float, grca: bool = False) -> Any:
    from drawer.batches import main_batch

    pipe = drawer.pipe
    settings = _settings(2, mechanisms=["regional", "subject_reference", *(["global_reference"] if grca else [])])
    refs = encode_references(pipe, [_image("red")])
    latents = torch.zeros(1, 4, 64 // drawer.vae_scale_factor, 96 // drawer.vae_scale_factor)
    batch = main_batch(pipe, two_subject_plan(), settings, refs, {"1": 0}, latents, [])
    if grca:
        batch.global_frames = encode_references(pipe, [_image("green")])
        batch.global_scale = 0.3
    batch.style_reference = encode_references(pipe, [_image("yellow")])
    batch.style_scale = scale
    return batch


def test_style_reference_acts_on_the_whole_canvas_and_its_scale_is_applied(
    tiny_drawer: Drawer, attn: Attention
) -> None:
    gen = torch.Generator().manual_seed(5)
    factor = tiny_drawer.vae_scale_factor
    tokens_count = (64 // factor) * (96 // factor)
    hidden = torch.randn(2, tokens_count, attn.to_q.in_features, generator=gen)
    text = torch.randn(2, 77, attn.to_k.in_features, generator=gen)
    ip = torch.randn(2, 2, 4, attn.to_k.in_features, generator=gen)  # subject 1's slot, then the style
    outs = {}
    for scale in (0.0, 0.3, 0.6):
        batch = _style_batch(tiny_drawer, scale)
        stack = build_stack(tiny_drawer.pipe, batch)
        assert stack.kwargs[LAYOUT_KWARG].active
        if scale:
            style = stack.kwargs[KWARG]
            assert isinstance(style, GlobalReferenceContext) and (style.first, style.count) == (1, 1)
        with torch.no_grad():
            outs[scale] = attn(hidden, encoder_hidden_states=(text, [ip]), **stack.kwargs).double()
    delta = outs[0.3] - outs[0.0]
    torch.testing.assert_close(outs[0.6] - outs[0.0], 2 * delta, rtol=1e-4, atol=1e-5)
    assert bool((delta.abs().amax(dim=-1) > 1e-6).all()), "every token of the canvas, in both halves"


def test_style_with_grca_is_two_stock_ip_branches_outside_the_layout(attn: Attention) -> None:
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 48, attn.to_q.in_features, generator=gen)
    text = torch.randn(2, 77, attn.to_k.in_features, generator=gen)
    tokens = torch.randn(2, 1 + 2 + 1, 4, attn.to_k.in_features, generator=gen)  # subject, 2 frames, style
    grca = GlobalReferenceContext(first=1, count=2, scale=0.4)
    style = GlobalReferenceContext(first=3, count=1, scale=0.7)
    with torch.no_grad():
        both = attn(hidden, encoder_hidden_states=(text, [tokens]), global_reference=CanvasReferences((grca, style)))
        only_grca = attn(hidden, encoder_hidden_states=(text, [tokens]), global_reference=grca)
        only_style = attn(hidden, encoder_hidden_states=(text, [tokens]), global_reference=style)
        plain = AttnProcessor2_0()(attn, hidden, text)
    torch.testing.assert_close(both, only_grca + only_style - plain, rtol=1e-4, atol=1e-5)
    assert isinstance(attn.processor, IPAdapterAttnProcessor2_0) and len(attn.processor.to_k_ip) == 1, "restored"


def test_style_joins_grca_in_one_stack(tiny_drawer: Drawer) -> None:
    stack = build_stack(tiny_drawer.pipe, _style_batch(tiny_drawer, 0.5, grca=True))
    canvas = stack.kwargs[KWARG]
    assert isinstance(canvas, CanvasReferences)
    assert [(p.first, p.count, p.scale) for p in canvas.parts] == [(1, 1, 0.3), (2, 1, 0.5)]


def test_style_and_grca_inside_the_layout_add_their_own_branches(tiny_drawer: Drawer, attn: Attention) -> None:
    gen = torch.Generator().manual_seed(6)
    factor = tiny_drawer.vae_scale_factor
    hidden = torch.randn(2, (64 // factor) * (96 // factor), attn.to_q.in_features, generator=gen)
    text = torch.randn(2, 77, attn.to_k.in_features, generator=gen)
    ip = torch.randn(2, 3, 4, attn.to_k.in_features, generator=gen)  # subject 1, the GRCA frame, the style
    outs = {}
    for grca_scale, style_scale in ((0.0, 0.0), (0.3, 0.0), (0.0, 0.5), (0.3, 0.5)):
        batch = _style_batch(tiny_drawer, style_scale, grca=True)
        batch.global_scale = grca_scale
        stack = build_stack(tiny_drawer.pipe, batch)
        with torch.no_grad():
            outs[grca_scale, style_scale] = attn(hidden, encoder_hidden_states=(text, [ip]), **stack.kwargs).double()
    base = outs[0.0, 0.0]
    grca, style = outs[0.3, 0.0] - base, outs[0.0, 0.5] - base
    assert grca.abs().max() > 1e-3 and style.abs().max() > 1e-3
    torch.testing.assert_close(outs[0.3, 0.5] - base, grca + style, rtol=1e-4, atol=1e-5)


def test_style_reference_changes_the_drawn_picture_and_scale_zero_does_not(tiny_drawer: Drawer) -> None:
    def draw(style: bytes | None, scale: float) -> np.ndarray:
        settings = _settings(2, style_reference={"scale": scale})
        job = DrawJob(plan=_plan(), references={"1": png("red")}, settings=settings, style_reference=style)
        return _pixels(tiny_drawer.draw(job).image)

    base = draw(None, 0.5)
    assert np.array_equal(draw(png("yellow"), 0.0), base)
    assert np.abs(draw(png("yellow"), 0.8) - base).max() > 1


def test_reference_plan_defaults() -> None:
    plan = ReferencePlan(slots={0: [0]}, controls={0: ReferenceControls()})
    assert plan.is_trivial
    assert not ReferencePlan(slots={0: [0, 1]}).is_trivial
    assert not ReferencePlan(controls={0: ReferenceControls(reference_window=(0.0, 0.5))}).is_trivial
