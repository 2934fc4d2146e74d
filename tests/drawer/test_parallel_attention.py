from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, IPAdapterAttnProcessor2_0
from PIL import Image

import drawer.parallel_attention as pa
from drawer import Drawer
from drawer.layout_masks import LayoutWeights, attention_grids, layout_weights
from drawer.parallel_attention import (
    ParallelCrossAttnProcessor,
    RegionalContext,
    RegionImage,
    SelfAttnProcessor,
    build_regional_context,
)
from drawer.render import RefineSwitch
from drawer.tiny import build_tiny_sd15
from studio.draw import DrawJob
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from tests.drawer.conftest import fast_settings

H, W = 64, 96
BOX_A = Box(x=0, y=0, w=40, h=64)
BOX_B = Box(x=48, y=16, w=40, h=32)


@pytest.fixture(scope="module")
def attn(tiny_drawer: Drawer) -> Attention:
    return tiny_drawer.pipe.unet.up_blocks[3].attentions[0].transformer_blocks[0].attn2  # full resolution


@pytest.fixture(scope="module")
def inputs(attn: Attention) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    grid = attention_grids(H, W, 2, 2)[0]
    hidden = attn.to_q.in_features
    cross = attn.to_k.in_features
    return {
        "hidden": torch.randn(2, grid.tokens, hidden, generator=gen),
        "text": torch.randn(2, 77, cross, generator=gen),
        "region": torch.randn(3, 77, cross, generator=gen),
        "ip": torch.randn(2, 2, 4, cross, generator=gen),
    }


def context(
    region: torch.Tensor,
    refs: list[int | None],
    img_scale: float = 0.7,
    boxes: tuple[Box, ...] = (BOX_A, BOX_B),
    sparse: bool = True,
) -> RegionalContext:
    image = RegionImage(
        boxes=list(boxes), background_row=0, subject_rows=list(range(1, len(boxes) + 1)), reference_index=refs
    )
    return build_regional_context(
        [image],
        region,
        height=H,
        width=W,
        grids=attention_grids(H, W, 2, 2),
        fuse_scale=(1.2, 0.0),
        global_weight=0.3,
        img_scale=img_scale,
        guided=True,
        num_references=2,
        sparse=sparse,
    )


def run(attn: Attention, inputs: dict[str, torch.Tensor], ctx: RegionalContext | None, **changes) -> torch.Tensor:
    values = {**inputs, **changes}
    with torch.no_grad():
        return attn(values["hidden"], encoder_hidden_states=(values["text"], [values["ip"]]), layout=ctx)


def b_weights(refs: list[int | None]) -> LayoutWeights:
    grid = attention_grids(H, W, 2, 2)[0]
    return layout_weights([BOX_A, BOX_B], [r is not None for r in refs], grid, H, W, (1.2, 0.0), 0.3, 0.7)


def test_processors_installed_on_every_cross_attention(tiny_drawer: Drawer) -> None:
    processors = tiny_drawer.pipe.unet.attn_processors
    assert processors
    for name, proc in processors.items():
        expected = ParallelCrossAttnProcessor if name.endswith("attn2.processor") else SelfAttnProcessor
        assert isinstance(proc, expected), name
        if expected is ParallelCrossAttnProcessor:
            assert proc.has_ip, "the IP-Adapter projections are reused"


def test_changing_subject_b_phrase_changes_only_b_region(attn: Attention, inputs: dict) -> None:
    ctx = context(inputs["region"], [0, 1])
    base = run(attn, inputs, ctx)
    region = inputs["region"].clone()
    region[2] += 1.0  # subject B's phrase row
    changed = run(attn, inputs, context(region, [0, 1]))
    diff = (changed - base).abs().amax(-1)
    assert torch.equal(diff[0], torch.zeros_like(diff[0])), "the unconditional half never sees region prompts"
    inside = b_weights([0, 1]).text[3] != 0
    assert 0 < inside.sum() < inside.numel()
    assert diff[1][~inside].max() == 0
    assert diff[1][inside].min() > 0


def test_changing_subject_b_reference_changes_only_b_region(attn: Attention, inputs: dict) -> None:
    ctx = context(inputs["region"], [0, 1])
    base = run(attn, inputs, ctx)
    ip = inputs["ip"].clone()
    ip[:, 1] += 1.0  # subject B's reference tokens, both halves
    diff = (run(attn, inputs, ctx, ip=ip) - base).abs().amax(-1)
    inside = b_weights([0, 1]).image[1] != 0
    for half in (0, 1):
        assert diff[half][~inside].max() == 0
        assert diff[half][inside].min() > 0


def test_subject_without_reference_has_no_image_output(attn: Attention, inputs: dict) -> None:
    ctx = context(inputs["region"], [None, 1])
    assert sum(len(group.source) for group in ctx.image_groups) == 2, "one image row per half, for B only"
    base = run(attn, inputs, ctx)
    ip = inputs["ip"].clone()
    ip[:, 0] += 5.0  # the slot A would use: never read
    assert torch.equal(run(attn, inputs, ctx, ip=ip), base)
    # unconditional half inside A only (B's weight zero there): plain negative-prompt attention, no IP (§6.9)
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, inputs["hidden"], inputs["text"])
    grid = attention_grids(H, W, 2, 2)[0]
    ys, xs = torch.meshgrid(torch.arange(grid.height), torch.arange(grid.width), indexing="ij")
    only_a = ((xs * 2 < 40) & (ys * 2 < 64)).flatten()
    torch.testing.assert_close(base[0][only_a], plain[0][only_a], rtol=1e-5, atol=1e-5)


def test_img_scale_zero_removes_image_branch_exactly(attn: Attention, inputs: dict) -> None:
    no_refs = run(attn, inputs, context(inputs["region"], [None, None]))
    zero_scale = context(inputs["region"], [0, 1], img_scale=0.0)
    assert not zero_scale.image_groups
    assert torch.equal(run(attn, inputs, zero_scale), no_refs)
    assert not torch.equal(run(attn, inputs, context(inputs["region"], [0, 1])), no_refs)


def test_projections_once_and_a_fixed_number_of_batched_sdpa_calls(
    attn: Attention, inputs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"q": 0, "out": 0, "sdpa": 0}
    hooks = [
        attn.to_q.register_forward_hook(lambda *_: calls.__setitem__("q", calls["q"] + 1)),
        attn.to_out[0].register_forward_hook(lambda *_: calls.__setitem__("out", calls["out"] + 1)),
    ]
    real = pa.F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls["sdpa"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(pa.F, "scaled_dot_product_attention", counting)
    counts = []
    try:
        for boxes in ((BOX_A, BOX_B), (BOX_A, BOX_B, Box(x=10, y=10, w=20, h=20), Box(x=60, y=0, w=30, h=30))):
            calls.update(q=0, out=0, sdpa=0)
            region = torch.cat([inputs["region"], inputs["region"][1:]])[: len(boxes) + 1]
            run(attn, inputs, context(region, [0, 1, 0, 1][: len(boxes)], boxes=boxes))
            counts.append(dict(calls))
    finally:
        for hook in hooks:
            hook.remove()
    assert counts[0] == counts[1], "the number of attention calls does not grow with the subjects"
    assert counts[0]["q"] == 1 and counts[0]["out"] == 1 and counts[0]["sdpa"] <= 4


def test_sparse_rows_equal_dense_rows(attn: Attention, inputs: dict) -> None:
    sparse = run(attn, inputs, context(inputs["region"], [0, 1]))
    dense = run(attn, inputs, context(inputs["region"], [0, 1], sparse=False))
    torch.testing.assert_close(sparse, dense, rtol=1e-5, atol=1e-5)


def test_region_keys_and_values_are_projected_once_per_layer(attn: Attention, inputs: dict) -> None:
    ctx = context(inputs["region"], [0, 1])
    seen = []
    hook = attn.to_k.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[0]))
    try:
        first = run(attn, inputs, ctx)
        second = run(attn, inputs, ctx)
    finally:
        hook.remove()
    assert seen == [3, 2, 2], "region rows once, then only the pipeline's own rows"
    torch.testing.assert_close(first, second)


def test_without_layout_equals_diffusers_ip_adapter_processor(attn: Attention, inputs: dict) -> None:
    proc = attn.processor
    stock = IPAdapterAttnProcessor2_0(proc.hidden_size, proc.cross_attention_dim, proc.num_tokens, proc.scale)
    stock.load_state_dict(proc.state_dict())
    ip = inputs["ip"][:, 0]
    with torch.no_grad():
        ours = attn(inputs["hidden"], encoder_hidden_states=(inputs["text"], [ip]))
        theirs = stock(attn, inputs["hidden"], (inputs["text"], [ip]))
    torch.testing.assert_close(ours, theirs)


def test_refine_switch_turns_into_plain_global_attention(attn: Attention, inputs: dict) -> None:
    ctx = context(inputs["region"], [0, 1])
    switch = RefineSwitch(ctx, refine_step=3)
    switch(1)
    assert ctx.active
    regional = run(attn, inputs, ctx)
    switch(2)
    assert not ctx.active
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, inputs["hidden"], inputs["text"])
    torch.testing.assert_close(run(attn, inputs, ctx), plain)
    assert not torch.allclose(regional, plain)


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data))).astype(np.int16)


@pytest.mark.parametrize("mode", ["no-subjects", "one-subject-covering"])
def test_single_region_equals_stock_pipeline(tiny_drawer: Drawer, mode: str) -> None:
    settings = fast_settings(seed=5, subject_init=False, refine_step=None)
    if mode == "no-subjects":
        plan = TurnPlan(height=H, width=W, background="a quiet lake", negative="blurry")
        prompt = plan.background
    else:
        item = PlanItem(subject_id="1", phrase="a red fox", box=Box(x=0, y=0, w=W, h=H))
        plan = TurnPlan(height=H, width=W, background="a quiet lake", negative="blurry", items=[item])
        settings = settings.model_copy(update={"fuse_scale": (1.0, 0.0), "global_weight": 0.0})
        prompt = "a red fox"
    ours = _pixels(tiny_drawer.draw(DrawJob(plan=plan, settings=settings)).image)
    stock = build_tiny_sd15(with_ip_adapter=False)
    noise = torch.randn(
        (1, 4, H // stock.vae_scale_factor, W // stock.vae_scale_factor), generator=torch.Generator().manual_seed(5)
    )
    image = stock(
        prompt=prompt,
        negative_prompt="blurry",
        height=H,
        width=W,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        latents=noise,
    ).images[0]
    theirs = np.asarray(image).astype(np.int16)
    assert np.abs(ours - theirs).max() <= 1


def test_refine_from_step_zero_equals_stock_global_prompt(tiny_drawer: Drawer) -> None:
    """The refine switch inside a real run: regional attention off from the start is the stock pipeline."""
    plan = TurnPlan(
        height=H,
        width=W,
        background="a quiet lake",
        negative="blurry",
        items=[
            PlanItem(subject_id="1", phrase="a red fox", box=BOX_A),
            PlanItem(subject_id="2", phrase="a boat", box=BOX_B),
        ],
    )
    settings = fast_settings(seed=4, subject_init=False, refine_step=0)
    ours = _pixels(tiny_drawer.draw(DrawJob(plan=plan, settings=settings)).image)
    stock = build_tiny_sd15(with_ip_adapter=False)
    noise = torch.randn(
        (1, 4, H // stock.vae_scale_factor, W // stock.vae_scale_factor), generator=torch.Generator().manual_seed(4)
    )
    image = stock(
        prompt=plan.global_prompt(),
        negative_prompt="blurry",
        height=H,
        width=W,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        latents=noise,
    ).images[0]
    assert np.abs(ours - np.asarray(image).astype(np.int16)).max() <= 1
    regional = _pixels(tiny_drawer.draw(DrawJob(plan=plan, settings=fast_settings(seed=4, subject_init=False))).image)
    assert np.abs(regional - ours).max() > 1


@pytest.mark.parametrize("which", ["tiny_drawer", "tiny_sdxl_drawer"])
def test_layout_grids_match_the_unet_on_odd_latent_sizes(which: str, request: pytest.FixtureRequest) -> None:
    """Latents of 23x37 (odd sides: the UNet's downsampling rounds up) — every attention call finds its weights."""
    pipe = request.getfixturevalue(which).pipe
    unet = pipe.unet
    height, width = 23, 37  # a "canvas" in latent pixels (VAE factor 1 here)
    cross = unet.config.cross_attention_dim
    gen = torch.Generator().manual_seed(0)
    image = RegionImage(boxes=[Box(x=3, y=2, w=15, h=17)], background_row=0, subject_rows=[1], reference_index=[0])
    ctx = build_regional_context(
        [image],
        torch.randn(2, 77, cross, generator=gen),
        height=height,
        width=width,
        grids=pa.unet_grids(unet, height, width, 1),
        fuse_scale=(1.2, 0.0),
        global_weight=0.3,
        img_scale=0.7,
        guided=True,
        num_references=1,
    )
    seen: list[int] = []
    hooks = [
        module.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
        for name, module in unet.named_modules()
        if name.endswith("attn2")
    ]
    added = {"image_embeds": [torch.randn(2, 1, 32, generator=gen)]}
    if unet.config.addition_embed_type == "text_time":
        added.update(text_embeds=torch.randn(2, 32, generator=gen), time_ids=torch.zeros(2, 6))
    try:
        with torch.no_grad():
            out = unet(
                torch.randn(2, 4, height, width, generator=gen),
                torch.tensor(500),
                encoder_hidden_states=torch.randn(2, 77, cross, generator=gen),
                added_cond_kwargs=added,
                cross_attention_kwargs={"layout": ctx},
            ).sample
    finally:
        for hook in hooks:
            hook.remove()
    assert out.shape == (2, 4, height, width)
    assert seen and set(seen) <= {g.tokens for g in pa.unet_grids(unet, height, width, 1)}
