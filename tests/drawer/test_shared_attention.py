"""ConsiStory shared attention, through the processors' observable state: who attends to which patches."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

import drawer.mechanisms as mechanisms
from drawer import Drawer
from drawer.mechanisms.shared_attention import (
    KWARG,
    AnchorCache,
    AnchorStore,
    SharedAttentionContext,
    SharedSetup,
    otsu_threshold,
    subject_mask,
)
from drawer.parallel_attention import unet_grids
from studio.draw import DrawJob
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from tests.drawer.conftest import fast_settings, png

H, W = 64, 96


def _context(drawer: Drawer, anchors: list[int], dropout: float = 0.0, images: int = 2) -> SharedAttentionContext:
    unet = drawer.pipe.unet
    setup = SharedSetup(
        subject_tokens=[{"1": [2]} for _ in range(images)],
        anchors=anchors,
        mask_dropout=dropout,
        vanilla_query_steps=0.0,
    )
    names = {id(m): n for n, m in unet.named_modules() if isinstance(m, Attention)}
    grids = unet_grids(unet, H, W, int(drawer.pipe.vae_scale_factor))
    return SharedAttentionContext(setup, grids, names, size=(H, W), steps=4, guided=True, seed=11)


@pytest.fixture(scope="module")
def up_attn1(tiny_drawer: Drawer) -> Attention:
    return tiny_drawer.pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn1


def _subject_left_half(tokens: int, width: int) -> torch.Tensor:
    cols = torch.arange(tokens) % width
    return cols < width // 2


def _inputs(attn: Attention, tokens: int) -> torch.Tensor:
    return torch.randn(4, tokens, attn.to_q.in_features, generator=torch.Generator().manual_seed(1))


def _run(attn: Attention, hidden: torch.Tensor, ctx: SharedAttentionContext | None) -> torch.Tensor:
    with torch.no_grad():
        return attn(hidden, **({KWARG: ctx} if ctx is not None else {}))


@pytest.mark.parametrize("on", [True, False])
def test_image_sees_the_anchors_subject_patches_but_not_its_background(
    tiny_drawer: Drawer, up_attn1: Attention, on: bool
) -> None:
    grid = unet_grids(tiny_drawer.pipe.unet, H, W, 2)[0]
    ctx = _context(tiny_drawer, anchors=[0])
    subject = _subject_left_half(grid.tokens, grid.width)
    ctx.kept = {grid.tokens: torch.stack([subject, subject])}
    ctx.index_kept()
    ctx.step = 1
    hidden = _inputs(up_attn1, grid.tokens)
    base = _run(up_attn1, hidden, ctx if on else None)
    anchor_rows = [0, 2]  # image 0 (the anchor) in the unconditional and the conditional half
    subject_changed, background_changed = hidden.clone(), hidden.clone()
    for row in anchor_rows:
        subject_changed[row, subject] += 1.0
        background_changed[row, ~subject] += 1.0
    follower = [1, 3]
    after_subject = _run(up_attn1, subject_changed, ctx if on else None)
    after_background = _run(up_attn1, background_changed, ctx if on else None)
    assert torch.equal(after_background[follower], base[follower])
    assert (not torch.equal(after_subject[follower], base[follower])) == on
    follower_changed = hidden.clone()
    follower_changed[follower] += 1.0  # a non-anchor image never reaches the anchors
    assert torch.equal(_run(up_attn1, follower_changed, ctx if on else None)[anchor_rows], base[anchor_rows])


def test_halves_attend_within_their_own_half(tiny_drawer: Drawer, up_attn1: Attention) -> None:
    grid = unet_grids(tiny_drawer.pipe.unet, H, W, 2)[0]
    ctx = _context(tiny_drawer, anchors=[0])
    everything = torch.ones(grid.tokens, dtype=torch.bool)
    ctx.kept, ctx.step = {grid.tokens: torch.stack([everything, everything])}, 1
    ctx.index_kept()
    hidden = _inputs(up_attn1, grid.tokens)
    changed = hidden.clone()
    changed[0] += 1.0  # the anchor's unconditional half only
    base, after = _run(up_attn1, hidden, ctx), _run(up_attn1, changed, ctx)
    assert not torch.equal(after[1], base[1]) and torch.equal(after[3], base[3])


def test_non_up_blocks_stay_stock(tiny_drawer: Drawer) -> None:
    attn = tiny_drawer.pipe.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn1
    grid = unet_grids(tiny_drawer.pipe.unet, H, W, 2)[1]
    ctx = _context(tiny_drawer, anchors=[0])
    ctx.kept, ctx.step = {grid.tokens: torch.ones(2, grid.tokens, dtype=torch.bool)}, 1
    ctx.index_kept()
    hidden = _inputs(attn, grid.tokens)
    with torch.no_grad():
        assert torch.equal(_run(attn, hidden, ctx), AttnProcessor2_0()(attn, hidden))


def test_otsu_mask_of_a_token_map_is_its_bright_region() -> None:
    maps = torch.full((100, 4), 0.1)
    maps[:30, 2] = 0.9
    maps[50:60, 3] = 0.8
    assert 0.1 < otsu_threshold(maps[:, 2]) < 0.9
    assert subject_mask(maps, [2]).nonzero().flatten().tolist() == list(range(30))
    assert subject_mask(maps, [2, 3]).sum() == 40  # OR over the subject's tokens
    skewed = torch.tensor([0.0] * 20 + [0.4] * 70 + [1.0] * 10).unsqueeze(1)
    assert subject_mask(skewed, [0]).sum() == 10  # Otsu, not the mean (which would keep 80)


@pytest.mark.parametrize("dropout", [0.0, 0.5, 0.8])
def test_dropout_removes_the_expected_fraction_of_subject_patches(tiny_drawer: Drawer, dropout: float) -> None:
    ctx = _context(tiny_drawer, anchors=[0, 1], dropout=dropout)
    record = ctx.record_grid
    maps = torch.full((2, record.tokens, 77), 0.01)
    maps[:, : record.tokens // 2, 2] = 0.5
    ctx._step_maps, ctx._step_count = maps, 1
    ctx.after_step(0)
    finest = max(ctx.grids)
    union = torch.stack([ctx._union(i, ctx.grids[finest]) for i in range(2)])
    kept = ctx.kept[finest]
    assert bool((kept <= union).all())
    fraction = 1 - kept.sum().item() / union.sum().item()
    assert abs(fraction - dropout) < 0.06
    again = _context(tiny_drawer, anchors=[0, 1], dropout=dropout)
    again._step_maps, again._step_count = maps, 1
    again.after_step(0)
    assert torch.equal(again.kept[finest], kept)  # seeded


def _turn(subjects: list[str]) -> TurnPlan:
    items = {
        "1": PlanItem(subject_id="1", phrase="a girl with a red scarf", box=Box(x=0, y=8, w=40, h=48)),
        "2": PlanItem(subject_id="2", phrase="a brown dog", box=Box(x=56, y=16, w=32, h=40)),
    }
    return TurnPlan(height=H, width=W, background="a park", items=[items[s] for s in subjects])


def test_cached_anchors_from_turn_1_reach_turn_3(tiny_drawer: Drawer, monkeypatch: pytest.MonkeyPatch) -> None:
    contexts: list[SharedAttentionContext] = []
    original = mechanisms.ATTENTION_INSTALLERS["shared_attention"]

    def capture(pipe, batch, stack):
        original(pipe, batch, stack)
        contexts.append(stack.kwargs[KWARG])

    monkeypatch.setitem(mechanisms.ATTENTION_INSTALLERS, "shared_attention", capture)
    tiny_drawer.anchors.caches.clear()
    settings = fast_settings(mechanisms=["regional", "shared_attention"])
    tiny_drawer.draw(DrawJob(plan=_turn(["1", "2"]), settings=settings))
    turn1 = tiny_drawer.anchors.caches["1"]
    assert turn1.patches and turn1.nbytes > 0 and contexts[0].cache_reads == 0
    tiny_drawer.draw(DrawJob(plan=_turn(["2"]), settings=settings))
    third = tiny_drawer.draw(DrawJob(plan=_turn(["1"]), settings=settings)).image
    reached = contexts[2]
    assert any(cache is turn1 for cache, _, _ in reached.setup.cached) and reached.cache_reads > 0
    tiny_drawer.anchors.caches.clear()
    assert tiny_drawer.draw(DrawJob(plan=_turn(["1"]), settings=settings)).image != third
    tiny_drawer.anchors.caches.clear()


def test_a_changed_reference_invalidates_the_cache(tiny_drawer: Drawer) -> None:

    tiny_drawer.anchors.caches.clear()
    settings = fast_settings(mechanisms=["regional", "subject_reference", "shared_attention"])
    tiny_drawer.draw(DrawJob(plan=_turn(["1"]), references={"1": png("red")}, settings=settings))
    assert tiny_drawer.anchors.usable("1", png("red")) is not None
    assert tiny_drawer.anchors.usable("1", png("blue")) is None and "1" not in tiny_drawer.anchors.caches


def test_an_anchor_cache_round_trips_through_bytes() -> None:
    cache = AnchorCache("2-1", "abc", 4, 0.25, {(0, "up_blocks.1.attn1"): torch.randn(2, 5, 8)})
    again = AnchorCache.from_bytes(cache.to_bytes())
    assert (again.subject_id, again.reference_hash, again.steps, again.area) == ("2-1", "abc", 4, 0.25)
    assert torch.equal(again.patches[(0, "up_blocks.1.attn1")], cache.patches[(0, "up_blocks.1.attn1")])


def test_all_mechanisms_together_on_sdxl_record_anchor_caches(tiny_sdxl_drawer: Drawer) -> None:
    tiny_sdxl_drawer.anchors.caches.clear()
    settings = fast_settings(
        mechanisms=["regional", "subject_reference", "subject_init", "shared_attention", "global_reference"]
    )
    job = DrawJob(
        plan=_turn(["1", "2"]), references={"1": png("red")}, settings=settings, global_references=[png("blue")]
    )
    tiny_sdxl_drawer.draw(job)
    assert set(tiny_sdxl_drawer.anchors.caches) == {"1", "2"}
    assert all(cache.nbytes > 0 for cache in tiny_sdxl_drawer.anchors.caches.values())
    tiny_sdxl_drawer.anchors.caches.clear()


def test_the_anchor_store_keeps_the_turn_where_the_subject_was_best_seen() -> None:
    store = AnchorStore()
    patches = {(0, "layer"): torch.zeros(2, 3, 4)}
    small, large = AnchorCache("1", "", 4, 0.1, patches), AnchorCache("1", "", 4, 0.5, patches)
    store.offer({"1": large})
    store.offer({"1": small})
    assert store.caches["1"] is large
    store.offer({"1": AnchorCache("1", "", 4, 0.6, {})})  # nothing recorded: never replaces
    assert store.caches["1"] is large


def test_vanilla_blending_covers_the_first_fraction_of_steps(tiny_drawer: Drawer) -> None:
    ctx = _context(tiny_drawer, anchors=[0])
    ctx.steps, ctx.setup.vanilla_query_steps = 20, 0.1
    weights = []
    for step in range(4):
        ctx.step = step
        weights.append(ctx.blend_weight())
    assert weights[0] == pytest.approx(0.9) and 0.81 < weights[1] < 0.9 and weights[2:] == [0.0, 0.0]


def test_masks_average_only_the_last_window_of_steps(tiny_drawer: Drawer) -> None:
    ctx = _context(tiny_drawer, anchors=[0])
    tokens = ctx.record_grid.tokens
    early = torch.full((2, tokens, 77), 0.01)
    early[:, : tokens // 2, 2] = 1.0  # the subject on the first half in the early steps
    late = torch.full((2, tokens, 77), 0.01)
    late[:, tokens // 2 :, 2] = 1.0  # and on the second half later
    assert ctx.window == 2
    weak = torch.where(early > 0.5, torch.tensor(0.3), early)
    for step, maps in enumerate([early, late, weak]):  # the window holds [late, weak] at the end
        ctx._step_maps, ctx._step_count = maps, 1
        ctx.after_step(step)
    assert ctx.subject_masks is not None
    mask = ctx.subject_masks[0]["1"]
    assert bool(mask[tokens // 2 :].all()) and not bool(mask[: tokens // 2].any())
