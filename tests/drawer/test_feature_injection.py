"""DIFT-style feature injection (`shared_attention.feature_injection`): the correspondence, the blend the
processors apply, the steps and layers it reaches, and the pre-pass that records the DIFT features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import drawer.mechanisms as mechanisms
from drawer import Drawer
from drawer.conditioning import encode_references, encode_texts
from drawer.layout_masks import Grid
from drawer.mechanisms import feature_injection
from drawer.mechanisms.feature_injection import (
    ALPHA,
    Correspondence,
    FeatureInjector,
    correspondence,
    injection_grid,
    injection_steps,
    nearest_neighbours,
    smooth,
)
from drawer.mechanisms.shared_attention import KWARG, SharedAttentionContext, SharedSetup
from drawer.parallel_attention import RegionImage, unet_grids
from drawer.render import RenderBatch, render
from drawer.stepping import Progress
from studio.draw import DrawJob, DrawSettings
from tests.drawer.conftest import fast_settings
from tests.drawer.test_shared_attention import _turn

H, W = 128, 128
GRID = Grid(4, 4, 32)


# --- correspondence (synthetic features) ---------------------------------------------------------------------


def test_correspondence_is_the_nearest_neighbour_in_cosine_distance() -> None:
    gen = torch.Generator().manual_seed(0)
    source = torch.randn(12, 8, generator=gen)
    perm = torch.randperm(12, generator=gen)
    target = source[perm] * 3.0  # the norm does not matter, the direction does
    mask = torch.ones(12, dtype=torch.bool)
    index, distance = nearest_neighbours(target, source, mask)
    assert index.tolist() == perm.tolist() and float(distance.abs().max()) < 1e-5
    mask[perm[:4]] = False  # those source pixels are not subject: never matched
    index, distance = nearest_neighbours(target, source, mask)
    cosine = F.cosine_similarity(target[:, None], source[None], dim=-1).masked_fill(~mask, -2)
    assert index.tolist() == cosine.argmax(dim=1).tolist()
    assert bool(mask[index].all()) and torch.allclose(distance, 1 - cosine.max(dim=1).values, atol=1e-6)


def _features() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Image 2's pixels 0-7 copy anchor 0's pixels perm0, 8-11 anchor 1's pixels perm1, 12-14 are unrelated, 15
    copies anchor 0 again but lies outside image 2's subject mask."""
    gen = torch.Generator().manual_seed(1)
    channels, length = 32, GRID.tokens
    anchors = torch.randn(2, length, channels, generator=gen)
    perm0, perm1 = torch.randperm(length, generator=gen), torch.randperm(length, generator=gen)
    image = torch.randn(length, channels, generator=gen)
    image[:8] = anchors[0, perm0[:8]]
    image[8:12] = anchors[1, perm1[8:12]] + 0.01 * torch.randn(4, channels, generator=gen)
    image[15] = anchors[0, perm0[15]]  # a close match, but in image 2's background
    flat = torch.cat([anchors, image[None]])
    features = flat.transpose(1, 2).reshape(3, channels, GRID.height, GRID.width)
    masks = torch.ones(3, length, dtype=torch.bool)
    masks[2, 14:] = False  # image 2's subject: pixels 0-13
    return features, masks, {"perm0": perm0, "perm1": perm1}


def test_each_pixel_takes_the_closest_anchor_and_only_close_subject_pixels_are_injected() -> None:
    features, masks, perms = _features()
    match = correspondence(features, masks, anchors=[0, 1], grid=GRID)
    assert match.source[2, :8].tolist() == [0] * 8 and match.source[2, 8:12].tolist() == [1] * 4
    assert match.index[2, :8].tolist() == perms["perm0"][:8].tolist()
    assert match.index[2, 8:12].tolist() == perms["perm1"][8:12].tolist()
    assert match.source[2, 15] == 0 and match.distance[2, 15] < 1e-5  # matched, yet background
    assert match.injected[2].nonzero().flatten().tolist() == list(range(12))  # 12, 13: far; 14, 15: background
    assert set(match.source[0].tolist()) == {1} and set(match.source[1].tolist()) == {0}  # never itself


def test_no_anchor_other_than_itself_means_no_injection() -> None:
    features, masks, _ = _features()
    match = correspondence(features, masks, anchors=[0], grid=GRID)
    assert not bool(match.injected[0].any()) and bool((match.source[0] == -1).all())


def test_dift_features_are_smoothed_with_a_3x3_gaussian_of_sigma_1() -> None:
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1.0
    kernel = smooth(impulse)[0, 0, 1:4, 1:4]
    line = torch.exp(-torch.tensor([1.0, 0.0, 1.0]) / 2)
    torch.testing.assert_close(kernel, torch.outer(line, line) / torch.outer(line, line).sum())
    flat = torch.full((1, 2, 4, 4), 3.0)
    torch.testing.assert_close(smooth(flat), flat)  # borders replicated: a constant stays constant


# --- the blend -------------------------------------------------------------------------------------------------


def _match(length: int) -> Correspondence:
    """Image 1 (of 2) matched in anchor 0 (pixel p → p reversed) on its first half; image 0 never injected."""
    injected = torch.zeros(2, length, dtype=torch.bool)
    injected[1, : length // 2] = True
    return Correspondence(
        source=torch.tensor([[-1] * length, [0] * length]),
        index=torch.arange(length).flip(0).repeat(2, 1),
        distance=torch.zeros(2, length),
        injected=injected,
    )


def test_the_blend_moves_injected_subject_patches_toward_the_matched_anchor_and_nothing_else() -> None:
    length, channels = GRID.tokens, 6
    injector = FeatureInjector(_match(length), GRID, images=2, guided=True, steps=50)
    out = torch.randn(4, length, channels, generator=torch.Generator().manual_seed(2))
    blended = injector.inject("down_blocks.1.attn1", 5, out)
    half = length // 2
    anchor_matched = out[2].flip(0)  # the conditional half of anchor 0, at the matched pixels
    expected = ALPHA * anchor_matched[:half] + (1 - ALPHA) * out[3, :half]
    torch.testing.assert_close(blended[3, :half], expected)
    assert torch.equal(blended[3, half:], out[3, half:])  # background: untouched
    assert torch.equal(blended[:3], out[:3])  # the unconditional half and the anchor
    assert injector.injected_at == [("down_blocks.1.attn1", 5)]
    assert torch.equal(injector.weights()[1, :half], torch.full((half,), ALPHA))


def test_only_the_configured_steps_and_grid_inject() -> None:
    assert list(injection_steps(50)) == list(range(5, 17))  # ConsiStory: steps 5-16 of 50
    assert list(injection_steps(30)) == list(range(3, 11))
    length = GRID.tokens
    injector = FeatureInjector(_match(length), GRID, images=2, guided=True, steps=50)
    out = torch.randn(4, length, 6)
    for step in (0, 4, 17, 49):
        assert injector.inject("layer", step, out) is out
    other_grid = torch.randn(4, length * 4, 6)
    assert injector.inject("layer", 5, other_grid) is other_grid
    assert injector.injected_at == []


# --- through the processors of the tiny UNet ---------------------------------------------------------------------


def _context(drawer: Drawer, steps: int = 50) -> tuple[SharedAttentionContext, Grid]:
    unet = drawer.pipe.unet
    setup = SharedSetup(subject_tokens=[{"1": [2]}, {"1": [2]}], anchors=[0], mask_dropout=0.0, vanilla_query_steps=0.0)
    names = {id(m): n for n, m in unet.named_modules() if isinstance(m, Attention)}
    grids = unet_grids(unet, H, W, int(drawer.pipe.vae_scale_factor))
    ctx = SharedAttentionContext(setup, grids, names, size=(H, W), steps=steps, guided=True, seed=3)
    grid = injection_grid(grids)
    ctx.injection = FeatureInjector(_match(grid.tokens), grid, images=2, guided=True, steps=steps)
    ctx.step = 5
    return ctx, grid


def _hidden(attn: Attention, tokens: int) -> torch.Tensor:
    return torch.randn(4, tokens, attn.to_q.in_features, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize("block", ["down_blocks.1", "up_blocks.2"])
def test_processors_inject_in_down_and_up_blocks_at_the_injection_grid(tiny_drawer: Drawer, block: str) -> None:
    unet = tiny_drawer.pipe.unet
    attn = unet.get_submodule(f"{block}.attentions.0.transformer_blocks.0.attn1")
    ctx, grid = _context(tiny_drawer)
    hidden = _hidden(attn, grid.tokens)
    with torch.no_grad():
        injected = attn(hidden, **{KWARG: ctx})
        assert ctx.injection is not None and ctx.injection.injected_at
        ctx.injection = None
        plain = attn(hidden, **{KWARG: ctx})
    half = grid.tokens // 2
    assert torch.equal(injected[:3], plain[:3]) and torch.equal(injected[3, half:], plain[3, half:])
    matched = plain[2].flip(0)[:half]
    moved = (injected[3, :half] - matched).norm(dim=-1)
    before = (plain[3, :half] - matched).norm(dim=-1)
    assert bool((moved < before).all())  # every injected patch moved toward the anchor's matched patch


def test_layers_off_the_injection_grid_stay_as_they_were(tiny_drawer: Drawer) -> None:
    attn = tiny_drawer.pipe.unet.up_blocks[3].attentions[0].transformer_blocks[0].attn1  # the full-resolution layer
    ctx, grid = _context(tiny_drawer)
    hidden = _hidden(attn, grid.tokens * 4)
    with torch.no_grad():
        assert torch.equal(attn(hidden, **{KWARG: ctx}), AttnProcessor2_0()(attn, hidden))
    assert ctx.injection is not None and ctx.injection.injected_at == []


# --- a render with the pre-pass ------------------------------------------------------------------------------------


def _batch(drawer: Drawer, inject: bool, steps: int = 10) -> RenderBatch:
    pipe = drawer.pipe
    prompts = ["a photo of a dog in a park", "a photo of a dog on a beach", "a photo of a dog in the snow"]
    text = encode_texts(pipe, prompts, ["blurry"] * 3)
    setup = SharedSetup(
        subject_tokens=[{"1": [4]} for _ in prompts],
        anchors=[0, 1],
        mask_dropout=0.5,
        vanilla_query_steps=0.1,
        feature_injection=inject,
    )
    return RenderBatch(
        images=[RegionImage(boxes=[], background_row=0, subject_rows=[], reference_index=[]) for _ in prompts],
        prompts=text,
        region_text=text.embeds,
        references=encode_references(pipe, []),
        height=H,
        width=W,
        steps=steps,
        guidance_scale=5.0,
        latents=torch.randn((3, 4, H // 8, W // 8), generator=torch.Generator().manual_seed(5)),
        fuse_scale=(1.2, 0.0),
        global_weight=0.3,
        img_scale=0.7,
        refine_step=None,
        seed=5,
        mechanisms=("shared_attention",),
        shared=setup,
    )


@pytest.fixture()
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[SharedAttentionContext]:
    captured: list[SharedAttentionContext] = []
    original = mechanisms.ATTENTION_INSTALLERS["shared_attention"]

    def capture(pipe, batch, stack):
        original(pipe, batch, stack)
        captured.append(stack.kwargs[KWARG])

    monkeypatch.setitem(mechanisms.ATTENTION_INSTALLERS, "shared_attention", capture)
    return captured


def test_a_render_with_injection_records_dift_features_once_then_injects_in_the_configured_steps(
    tiny_drawer: Drawer, contexts: list[SharedAttentionContext]
) -> None:
    unet = tiny_drawer.pipe.unet
    calls: list[int] = []
    up_outputs: list[torch.Tensor] = []
    seen: list[torch.Tensor] = []
    original = feature_injection.correspondence

    def spy(features: torch.Tensor, *args: object) -> Correspondence:
        seen.append(features)
        return original(features, *args)

    handles = [
        unet.register_forward_pre_hook(lambda module, args: calls.append(int(args[1]))),
        unet.up_blocks[1].register_forward_hook(lambda module, args, output: up_outputs.append(output)),
    ]
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(feature_injection, "correspondence", spy)
            batch = _batch(tiny_drawer, inject=True)
            injected_image = render(tiny_drawer.pipe, batch, Progress(10, None, None))[0]
    finally:
        for handle in handles:
            handle.remove()
    # the DIFT features: the conditional half of up_blocks[1] (output on the 8x8 injection grid) at t=301, smoothed
    assert up_outputs[6].shape[-2:] == (8, 8) and len(seen) == 1
    torch.testing.assert_close(seen[0], smooth(up_outputs[6][3:6].float()))
    pre, main = contexts
    # DDIM, 10 steps: timesteps 901 … 1; the pre-pass stops after 301 (nearest to 261) and decodes nothing
    assert calls[:8] == [901, 801, 701, 601, 501, 401, 301, 901] and len(calls) == 7 + 10
    assert pre.injection is None and not pre.setup.record
    assert main.injection is not None
    match = batch.shared.correspondence  # type: ignore[union-attr]
    grid = injection_grid(unet_grids(unet, H, W, int(tiny_drawer.pipe.vae_scale_factor)))
    assert isinstance(match, Correspondence) and match.source.shape == (3, grid.tokens)
    assert {step for _, step in main.injection.injected_at} == set(injection_steps(10))
    layers = {layer for layer, _ in main.injection.injected_at}
    assert layers == {
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1",
        "up_blocks.2.attentions.0.transformer_blocks.0.attn1",
        "up_blocks.2.attentions.1.transformer_blocks.0.attn1",
    }
    assert bool(match.injected.any())
    contexts.clear()
    plain_image = render(tiny_drawer.pipe, _batch(tiny_drawer, inject=False), Progress(10, None, None))[0]
    assert plain_image.tobytes() != injected_image.tobytes()


def test_off_by_default_no_pre_pass_and_no_injector(
    tiny_drawer: Drawer, contexts: list[SharedAttentionContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert DrawSettings().shared_attention.feature_injection is False

    def never(*args: object) -> None:
        raise AssertionError("feature injection ran while off")

    monkeypatch.setattr(feature_injection, "prepare", never)
    monkeypatch.setattr(FeatureInjector, "inject", never)
    render(tiny_drawer.pipe, _batch(tiny_drawer, inject=False, steps=3), Progress(3, None, None))
    assert len(contexts) == 1 and contexts[0].injection is None


def test_a_turn_without_anchors_in_its_batch_draws_the_same_picture(tiny_drawer: Drawer) -> None:
    """In a turn the anchors are cached, not in the batch: injection has no source there (docs/mechanisms.md)."""
    tiny_drawer.anchors.caches.clear()
    pictures = []
    for inject in (False, True):
        settings = fast_settings(mechanisms=["regional", "shared_attention"])
        settings.shared_attention.feature_injection = inject
        pictures.append(tiny_drawer.draw(DrawJob(plan=_turn(["1"]), settings=settings)).image)
        tiny_drawer.anchors.caches.clear()
    assert pictures[0] == pictures[1]
