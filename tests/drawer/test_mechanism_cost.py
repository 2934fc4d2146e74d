"""The cost work of issue 13 §5 changes no result: GRCA projects the frames once per layer per render and stays
the stock IP-Adapter bit for bit; shared attention's batched calls equal one attention call per image."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0

from drawer import Drawer
from drawer.mechanisms.global_reference import GlobalReferenceContext
from drawer.mechanisms.shared_attention import KWARG, SharedAttentionContext, SharedSetup
from drawer.parallel_attention import unet_grids


@pytest.fixture(scope="module")
def cross(tiny_drawer: Drawer) -> Attention:
    return tiny_drawer.pipe.unet.up_blocks[1].attentions[0].transformer_blocks[0].attn2


def _stock(attn: Attention, scale: float) -> IPAdapterAttnProcessor2_0:
    proc = attn.processor
    stock = IPAdapterAttnProcessor2_0(proc.hidden_size, proc.cross_attention_dim, proc.num_tokens, [scale])
    stock.load_state_dict(proc.state_dict())
    return stock


def _count_projections(attn: Attention) -> tuple[list[int], list[torch.utils.hooks.RemovableHandle]]:
    calls: list[int] = []
    processor = attn.processor
    handles = [
        processor.to_k_ip[0].register_forward_hook(lambda *args: calls.append(1)),
        processor.to_v_ip[0].register_forward_hook(lambda *args: calls.append(1)),
    ]
    return calls, handles


@pytest.mark.parametrize("cache_kv", [True, False])
def test_grca_projects_the_frames_once_per_layer_and_stays_the_stock_ip_adapter(
    cross: Attention, cache_kv: bool
) -> None:
    gen = torch.Generator().manual_seed(6)
    hidden = torch.randn(2, 48, cross.to_q.in_features, generator=gen)
    text = torch.randn(2, 77, cross.to_k.in_features, generator=gen)
    tokens = torch.randn(2, 1 + 4, 4, cross.to_k.in_features, generator=gen)
    grca = GlobalReferenceContext(first=1, count=4, scale=0.35, cache_kv=cache_kv)
    calls, handles = _count_projections(cross)
    try:
        with torch.no_grad():
            theirs = _stock(cross, 0.35)(cross, hidden, (text, [tokens[:, 1:]]))
            for step in range(3):  # the same frames at every step of a render
                step_hidden = hidden + step
                ours = cross(step_hidden, encoder_hidden_states=(text, [tokens.clone()]), global_reference=grca)
                stock = _stock(cross, 0.35)(cross, step_hidden, (text, [tokens[:, 1:]]))
                assert torch.equal(ours, stock)
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == (2 if cache_kv else 6)
    assert torch.equal(cross(hidden, encoder_hidden_states=(text, [tokens]), global_reference=grca), theirs)


def test_grca_inside_the_layout_reads_the_cached_frames(tiny_drawer: Drawer, cross: Attention) -> None:
    from drawer.mechanisms import build_stack
    from tests.drawer.test_composition import _main_batch

    gen = torch.Generator().manual_seed(7)
    factor = tiny_drawer.vae_scale_factor
    hidden = torch.randn(2, (64 // factor) * (96 // factor), cross.to_q.in_features, generator=gen)
    text = torch.randn(2, 77, cross.to_k.in_features, generator=gen)
    tokens = torch.randn(2, 2, 4, cross.to_k.in_features, generator=gen)
    outs = []
    calls, handles = _count_projections(cross)
    try:
        for cache_kv in (True, False):
            stack = build_stack(tiny_drawer.pipe, _main_batch(tiny_drawer, ("regional", "global_reference")))
            grca = stack.kwargs["global_reference"]
            stack.kwargs["global_reference"] = GlobalReferenceContext(grca.first, grca.count, 0.5, cache_kv=cache_kv)
            with torch.no_grad():
                outs.append([cross(hidden, encoder_hidden_states=(text, [tokens]), **stack.kwargs) for _ in range(2)])
    finally:
        for handle in handles:
            handle.remove()
    assert len(calls) == 2 + 4  # cached: one projection pair for two calls; uncached: one pair per call
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1], strict=True))


def _reference_shared(attn: Attention, hidden: torch.Tensor, ctx: SharedAttentionContext) -> torch.Tensor:
    """One attention call per image and half: own keys plus the kept patches of the other anchors."""
    query, key, value = (
        proj(hidden).view(hidden.shape[0], hidden.shape[1], attn.heads, -1).transpose(1, 2)
        for proj in (attn.to_q, attn.to_k, attn.to_v)
    )
    kept = ctx.kept_index[hidden.shape[1]]
    rows = []
    for row in range(hidden.shape[0]):
        half, image = divmod(row, ctx.images)
        others = [j for j in ctx.setup.anchors if j != image]
        keys = [key[row]] + [key[half * ctx.images + j][:, kept[j]] for j in others]
        values = [value[row]] + [value[half * ctx.images + j][:, kept[j]] for j in others]
        keys_row, values_row = torch.cat(keys, 1)[None], torch.cat(values, 1)[None]
        rows.append(F.scaled_dot_product_attention(query[row : row + 1], keys_row, values_row))
    out = torch.cat(rows).transpose(1, 2).reshape(hidden.shape[0], hidden.shape[1], -1)
    return attn.to_out[1](attn.to_out[0](out))


def test_batched_shared_attention_equals_one_call_per_image(tiny_drawer: Drawer) -> None:
    unet = tiny_drawer.pipe.unet
    attn = unet.up_blocks[2].attentions[0].transformer_blocks[0].attn1
    height, width = 64, 96
    grids = unet_grids(unet, height, width, int(tiny_drawer.pipe.vae_scale_factor))
    grid = grids[1]  # up_blocks[2]: 1/2 of the latent side
    setup = SharedSetup(
        subject_tokens=[{"1": [2]} for _ in range(4)], anchors=[0, 1, 2], mask_dropout=0.0, vanilla_query_steps=0.0
    )
    names = {id(m): n for n, m in unet.named_modules() if isinstance(m, Attention)}
    ctx = SharedAttentionContext(setup, grids, names, size=(height, width), steps=4, guided=True, seed=1)
    gen = torch.Generator().manual_seed(8)
    ctx.kept = {grid.tokens: torch.rand(4, grid.tokens, generator=gen) > 0.4}
    ctx.index_kept()
    ctx.step = 2
    hidden = torch.randn(8, grid.tokens, attn.to_q.in_features, generator=gen)
    with torch.no_grad():
        ours = attn(hidden, **{KWARG: ctx})
        reference = _reference_shared(attn, hidden, ctx)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def _shared_context(
    drawer: Drawer, images: int, anchors: list[int], steps: int = 4, vanilla: float = 0.0, cached: list | None = None
) -> tuple[SharedAttentionContext, list]:
    unet = drawer.pipe.unet
    grids = unet_grids(unet, 64, 96, int(drawer.pipe.vae_scale_factor))
    setup = SharedSetup(
        subject_tokens=[{"1": [2]} for _ in range(images)],
        anchors=anchors,
        mask_dropout=0.0,
        vanilla_query_steps=vanilla,
        cached=cached or [],
    )
    names = {id(m): n for n, m in unet.named_modules() if isinstance(m, Attention)}
    return SharedAttentionContext(setup, grids, names, size=(64, 96), steps=steps, guided=True, seed=1), grids


def test_vanilla_blending_weights_own_attention_by_the_blend_weight(tiny_drawer: Drawer) -> None:
    attn = tiny_drawer.pipe.unet.up_blocks[2].attentions[0].transformer_blocks[0].attn1
    ctx, grids = _shared_context(tiny_drawer, images=2, anchors=[0, 1], steps=10, vanilla=0.3)
    grid = grids[1]
    gen = torch.Generator().manual_seed(9)
    ctx.kept = {grid.tokens: torch.rand(2, grid.tokens, generator=gen) > 0.5}
    ctx.index_kept()
    hidden = torch.randn(4, grid.tokens, attn.to_q.in_features, generator=gen)
    with torch.no_grad():
        ctx.step = 1
        weight = ctx.blend_weight()
        blended = attn(hidden, **{KWARG: ctx})
        ctx.step = 5  # past the blending steps: shared attention only
        shared = attn(hidden, **{KWARG: ctx})
        own = AttnProcessor2_0()(attn, hidden)
    assert 0.8 < weight < 0.9
    torch.testing.assert_close(blended, weight * own + (1 - weight) * shared, rtol=1e-5, atol=1e-6)


def test_cached_anchor_patches_reach_only_the_queries_inside_the_subjects_box(tiny_drawer: Drawer) -> None:
    from drawer.mechanisms.shared_attention import AnchorCache
    from studio.geometry import Box

    unet = tiny_drawer.pipe.unet
    attn = unet.up_blocks[2].attentions[0].transformer_blocks[0].attn1
    layer = next(n for n, m in unet.named_modules() if m is attn)
    gen = torch.Generator().manual_seed(10)
    patches = {(step, layer): torch.randn(2, 5, attn.to_q.in_features, generator=gen) for step in range(4)}
    cache = AnchorCache("1", "", 4, 0.25, patches)
    left_half = Box(x=0, y=0, w=48, h=64)  # of the 96-wide canvas
    with_cache, grids = _shared_context(tiny_drawer, images=1, anchors=[], cached=[(cache, 0, left_half)])
    grid = grids[1]
    hidden = torch.randn(2, grid.tokens, attn.to_q.in_features, generator=gen)
    with torch.no_grad():
        with_cache.step = 2
        ours = attn(hidden, **{KWARG: with_cache})
        stock = AttnProcessor2_0()(attn, hidden)
    inside = (torch.arange(grid.tokens) % grid.width) < grid.width // 2
    assert with_cache.cache_reads == 1
    assert torch.equal(ours[:, ~inside], stock[:, ~inside])
    assert not torch.allclose(ours[:, inside], stock[:, inside])
