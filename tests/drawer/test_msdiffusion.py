"""MS-Diffusion backend (drawer.msdiffusion) on tiny random-weight models: the adapter file, the grounding
resampler, the multi-subject cross-attention processors, the auto layout, and a turn through the drawer."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import Attention
from PIL import Image

from drawer.core import Drawer
from drawer.loading import ModelLoadError, load_pipeline
from drawer.msdiffusion import MSCrossAttnProcessor, MSDiffusionContext, adapter_of, convert_to_safetensors
from drawer.msdiffusion.context import box_masks, minmax_normalise
from drawer.msdiffusion.inputs import subject_tokens
from drawer.msdiffusion.resampler import GroundingResampler, ResamplerConfig, fourier_embed
from drawer.msdiffusion.tiny import build_tiny_msdiffusion, random_adapter_state_dict, save_random_adapter
from drawer.msdiffusion.weights import install_adapter, read_adapter_file
from drawer.parallel_attention import unet_grids
from drawer.tiny import build_tiny_sdxl, random_ip_adapter_state_dict
from studio.draw import DrawJob, DrawSettings
from studio.msdiffusion_settings import MSDiffusionSettings
from studio.settings import ModelPreset
from tests.drawer.conftest import fast_settings, png, two_subject_plan

SIDE = 128  # canvas; latents 16×16, attention grids 8×8 and 4×4
LAYER = "down_blocks.2.attentions.0.transformer_blocks.0.attn2"
BOXES = [(0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0)]  # normalised xyxy, no overlap


@pytest.fixture(scope="module")
def ms_pipe():
    return build_tiny_msdiffusion()


def image(color: str) -> Image.Image:
    return Image.new("RGB", (40, 40), color)


def tokens_for(pipe, colors: list[str], boxes=BOXES, drop: bool = False) -> torch.Tensor:
    adapter = adapter_of(pipe)
    subjects = subject_tokens(pipe, adapter, [image(c) for c in colors], ["girl", "dog"][: len(colors)], boxes, drop)
    return torch.cat([adapter.dummy_image_tokens[0], subjects.reshape(-1, subjects.shape[-1])])


def context_for(pipe, tokens: torch.Tensor, boxes=BOXES, **kwargs) -> MSDiffusionContext:
    adapter = adapter_of(pipe)
    return MSDiffusionContext(
        tokens,
        num_dummy=adapter.num_dummy,
        num_queries=adapter.config.num_queries,
        boxes=list(boxes),
        grids=unet_grids(pipe.unet, SIDE, SIDE, 8),
        **kwargs,
    )


def layer_inputs(pipe, seed: int = 3) -> tuple[Attention, torch.Tensor, torch.Tensor]:
    attn = pipe.unet.get_submodule(LAYER)
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2, 64, attn.to_q.in_features, generator=gen)  # [uncond, cond] × 8×8 tokens
    text = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=gen)
    return attn, hidden, text


def run_layer(attn: Attention, hidden: torch.Tensor, text: torch.Tensor, context=None) -> torch.Tensor:
    with torch.no_grad():
        if context is None:
            return attn(hidden, encoder_hidden_states=text)
        return attn(hidden, encoder_hidden_states=text, msdiffusion=context)


def mask_of(box_index: int, grid_side: int = 8) -> torch.Tensor:
    from drawer.layout_masks import Grid

    return box_masks([BOXES[box_index]], Grid(grid_side, grid_side, SIDE // grid_side))[0].bool()


RAN: list[str] = []


def _mark() -> str:
    RAN.append("code ran")
    return "marker"


class Marker:
    """Pickles as a call of `_mark`: loading it with weights_only=False would run code."""

    def __reduce__(self) -> tuple:
        return (_mark, ())


# --- the adapter file -------------------------------------------------------------------------------------


def test_a_random_adapter_in_the_published_layout_loads_through_the_real_loader(tmp_path: Path) -> None:
    """Saved with torch.save as ms_adapter.bin, read with weights_only=True, remapped by layer order."""
    pipe = build_tiny_sdxl(with_ip_adapter=False)
    path = save_random_adapter(pipe.unet, tmp_path / "ms_adapter.bin", seed=5)
    state = read_adapter_file(path)
    assert set(state) == {"image_proj", "ms_adapter", "dummy_image_tokens"}
    adapter = install_adapter(pipe, state)
    names = list(pipe.unet.attn_processors)
    cross = [k for k, name in enumerate(names) if name.endswith("attn2.processor")]
    assert cross and all(k % 2 == 1 for k in cross)  # the published numbering counts attn1 too
    for k in cross:
        processor = pipe.unet.attn_processors[names[k]]
        assert isinstance(processor, MSCrossAttnProcessor)
        assert torch.equal(processor.to_k_ms.weight, state["ms_adapter"][f"{k}.to_k_ip.weight"])
        assert torch.equal(processor.to_v_ms.weight, state["ms_adapter"][f"{k}.to_v_ip.weight"])
    for key, value in state["image_proj"].items():
        assert torch.equal(adapter.resampler.state_dict()[key], value), key
    assert torch.equal(adapter.dummy_image_tokens, state["dummy_image_tokens"])
    assert adapter_of(pipe) is adapter


def test_published_key_layout_gives_the_published_sizes() -> None:
    """A resampler of the published sizes (built on the meta device: shapes only) round-trips its config from
    its own state-dict keys, and the tiny file uses exactly the same key names."""
    with torch.device("meta"):
        published = GroundingResampler(ResamplerConfig())
    assert ResamplerConfig.from_state_dict(published.state_dict()) == ResamplerConfig()
    config = ResamplerConfig()
    assert (config.dim, config.heads, config.num_queries, config.embedding_dim, config.output_dim) == (
        1280,
        20,
        16,
        1664,
        2048,
    )
    assert published.state_dict()["latent_proj.0.weight"].shape == (1664, 832)
    tiny = random_adapter_state_dict(build_tiny_sdxl(with_ip_adapter=False).unet, depth=4)
    assert set(tiny["image_proj"]) == set(published.state_dict())


def test_safetensors_conversion_loads_the_same_weights(tmp_path: Path) -> None:
    pipe = build_tiny_sdxl(with_ip_adapter=False)
    source = save_random_adapter(pipe.unet, tmp_path / "ms_adapter.bin")
    target = convert_to_safetensors(source, tmp_path / "ms_adapter.safetensors")
    a, b = read_adapter_file(source), read_adapter_file(target)
    for entry in ("image_proj", "ms_adapter"):
        assert a[entry].keys() == b[entry].keys()
        assert all(torch.equal(a[entry][k], b[entry][k]) for k in a[entry])
    assert torch.equal(a["dummy_image_tokens"], b["dummy_image_tokens"])


def test_files_of_the_wrong_kind_are_clear_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.bin"
    text.write_text("not a checkpoint")
    with pytest.raises(ModelLoadError, match=r"notes\.bin is not an MS-Diffusion adapter"):
        read_adapter_file(text)
    ip_adapter = tmp_path / "ip-adapter.bin"
    torch.save(random_ip_adapter_state_dict(build_tiny_sdxl(with_ip_adapter=False).unet), ip_adapter)
    with pytest.raises(ModelLoadError, match=r"ip-adapter\.bin is not an MS-Diffusion adapter: it lacks"):
        read_adapter_file(ip_adapter)
    code = tmp_path / "code.bin"
    code.write_bytes(pickle.dumps(Path("x"), protocol=2))  # a pickle that weights_only refuses
    with pytest.raises(ModelLoadError, match=r"code\.bin is not an MS-Diffusion adapter"):
        read_adapter_file(code)
    with pytest.raises(ModelLoadError, match="does not exist"):
        read_adapter_file(tmp_path / "missing.bin")
    unsafe = tmp_path / "unsafe.bin"
    torch.save({"image_proj": Marker(), "ms_adapter": {}, "dummy_image_tokens": torch.zeros(1, 4, 64)}, unsafe)
    with pytest.raises(ModelLoadError, match=r"unsafe\.bin is not an MS-Diffusion adapter .*weights_only"):
        read_adapter_file(unsafe)
    assert RAN == []  # read with weights_only=True: no code from the file ran


def test_a_mismatched_image_encoder_is_a_message_not_a_shape_trace() -> None:
    pipe = build_tiny_sdxl(with_ip_adapter=False)  # its image encoder is 32 wide
    state = random_adapter_state_dict(pipe.unet, embedding_dim=48)
    with pytest.raises(ModelLoadError, match=r"image encoder hidden size 32 .* 48-wide penultimate") as info:
        install_adapter(pipe, state, name="ms_adapter.bin")
    assert "size mismatch" not in str(info.value)
    assert "ms_adapter.bin" in str(info.value)


def test_an_adapter_for_another_unet_is_a_clear_error() -> None:
    pipe = build_tiny_sdxl(with_ip_adapter=False)
    state = random_adapter_state_dict(pipe.unet)
    state["ms_adapter"] = {k: v for k, v in state["ms_adapter"].items() if not k.startswith("1.")}
    with pytest.raises(ModelLoadError, match="cross-attention layers do not match"):
        install_adapter(pipe, state)


# --- the grounding resampler --------------------------------------------------------------------------------


def test_fourier_embedding_order_is_frequency_then_sin_cos_then_coordinate() -> None:
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    features = fourier_embed(boxes)
    assert features.shape == (1, 64)
    for f in range(8):
        band = 100.0 ** (f / 8)
        for c in range(4):
            assert features[0, f * 8 + c] == pytest.approx(torch.sin(boxes[0, c] * band).item(), abs=1e-6)
            assert features[0, f * 8 + 4 + c] == pytest.approx(torch.cos(boxes[0, c] * band).item(), abs=1e-6)


def test_dropped_grounding_uses_the_learned_latents(ms_pipe) -> None:
    resampler = adapter_of(ms_pipe).resampler
    phrases = torch.randn(2, resampler.config.phrase_dim)
    boxes = torch.tensor(BOXES)
    with torch.no_grad():
        dropped = resampler.initial_queries(phrases, boxes, torch.tensor([True, False]))
        grounded = resampler.initial_queries(phrases, boxes, torch.tensor([False, False]))
        moved = resampler.initial_queries(phrases, boxes.flip(0), torch.tensor([True, False]))
    assert torch.equal(dropped[0], resampler.grounding_latents[0])
    assert torch.equal(dropped[1], grounded[1])
    assert not torch.allclose(grounded[0], resampler.grounding_latents[0])
    assert torch.equal(moved[0], dropped[0])  # the box no longer matters once dropped
    # grounded queries are LayerNorm(MLP(phrase ‖ Fourier(box))): the tiny file's norm has unit weight, zero bias
    assert torch.allclose(grounded.mean(-1), torch.zeros(2, 4), atol=1e-5)
    assert torch.allclose(grounded.var(-1, unbiased=False), torch.ones(2, 4), atol=1e-3)
    a = tokens_for(ms_pipe, ["red", "blue"], drop=True)
    b = tokens_for(ms_pipe, ["red", "blue"], boxes=[BOXES[1], BOXES[0]], drop=True)
    c = tokens_for(ms_pipe, ["red", "blue"], boxes=[BOXES[1], BOXES[0]])
    d = tokens_for(ms_pipe, ["red", "blue"])
    assert torch.equal(a, b) and not torch.allclose(c, d)


# --- the multi-subject cross-attention ----------------------------------------------------------------------


def test_a_subjects_reference_changes_the_output_only_inside_its_box(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    seen: list[torch.Tensor] = []
    outputs = []
    for colors in (["red", "blue"], ["red", "green"]):
        context = context_for(ms_pipe, tokens_for(ms_pipe, colors))
        context.observer = lambda layer, masks, probs, out: seen.append(out[0])
        outputs.append(run_layer(attn, hidden, text, context))
    changed = (outputs[0] - outputs[1]).abs().amax(-1)  # [rows, tokens]
    assert torch.equal(changed[0], torch.zeros(64))  # the unconditional half has no image branch
    inside = mask_of(1)
    assert bool((changed[1][inside] > 0).all())
    assert torch.equal(changed[1][~inside], torch.zeros(int((~inside).sum())))
    image_changed = (seen[0] - seen[1]).abs().amax(-1)
    assert bool((image_changed[inside] > 0).all()) and not bool(image_changed[~inside].any())


def test_the_background_gets_no_image_conditioning_and_text_attention_is_unchanged(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    plain = run_layer(attn, hidden, text)
    with_images = run_layer(attn, hidden, text, context_for(ms_pipe, tokens_for(ms_pipe, ["red", "blue"])))
    boxes = mask_of(0) | mask_of(1)
    assert torch.equal(with_images[0], plain[0])
    assert torch.equal(with_images[1][~boxes], plain[1][~boxes])
    assert bool(((with_images[1] - plain[1]).abs().amax(-1)[boxes] > 0).all())


def test_the_one_pass_path_equals_adding_the_image_branch_to_the_extended_processor(ms_pipe) -> None:
    """With plain text attention the processor shares the query and to_out between the branches; with another
    mechanism active it adds the image branch to the extended processor's output. Both give the same result,
    and the second keeps the text-only output exactly where there is no image conditioning."""
    attn, hidden, text = layer_inputs(ms_pipe)
    tokens = tokens_for(ms_pipe, ["red", "blue"])
    one_pass = run_layer(attn, hidden, text, context_for(ms_pipe, tokens))
    processor = attn.processor
    processor.fast_path = False
    try:
        added = run_layer(attn, hidden, text, context_for(ms_pipe, tokens))
    finally:
        processor.fast_path = True
    assert torch.allclose(one_pass, added, atol=1e-5) and not torch.equal(one_pass, run_layer(attn, hidden, text))
    plain = run_layer(attn, hidden, text)
    background = ~(mask_of(0) | mask_of(1))
    assert torch.equal(added[1][background], plain[1][background]) and torch.equal(added[0], plain[0])


def test_dummy_tokens_receive_attention_but_contribute_nothing(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    tokens = tokens_for(ms_pipe, ["red", "blue"])
    probs_seen: list[torch.Tensor] = []
    context = context_for(ms_pipe, tokens)
    context.observer = lambda layer, masks, probs, out: probs_seen.append(probs[0])
    out = run_layer(attn, hidden, text, context)
    probs = probs_seen[0]  # [heads, tokens, image tokens]
    dummy_mass = probs[..., :4].sum(-1)
    background = ~(mask_of(0) | mask_of(1))
    assert torch.allclose(dummy_mass[:, background], torch.ones_like(dummy_mass[:, background]))
    assert float(dummy_mass[:, ~background].max()) < 1e-6
    other = tokens.clone()
    other[:4] = torch.randn(4, tokens.shape[1]) * 10
    assert torch.equal(run_layer(attn, hidden, text, context_for(ms_pipe, other)), out)


def test_subject_scales_scale_each_subjects_contribution(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    tokens = tokens_for(ms_pipe, ["red", "blue"])
    plain = run_layer(attn, hidden, text)[1]
    unit = run_layer(attn, hidden, text, context_for(ms_pipe, tokens, subject_scales=[1.0, 1.0]))[1] - plain
    scaled = run_layer(attn, hidden, text, context_for(ms_pipe, tokens, subject_scales=[0.5, 2.0]))[1] - plain
    first, second = mask_of(0), mask_of(1)
    assert torch.allclose(scaled[first], 0.5 * unit[first], atol=1e-5)
    assert torch.allclose(scaled[second], 2.0 * unit[second], atol=1e-5)
    default = run_layer(attn, hidden, text, context_for(ms_pipe, tokens, scale=0.6))[1] - plain
    assert torch.allclose(default, 0.6 * unit, atol=1e-5)


def test_the_active_hook_turns_a_subject_off_at_a_step(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    tokens = tokens_for(ms_pipe, ["red", "blue"])
    plain = run_layer(attn, hidden, text)[1]
    context = context_for(ms_pipe, tokens, subject_active=lambda step, subject: not (step == 1 and subject == 0))
    on = run_layer(attn, hidden, text, context)[1] - plain
    context.after_step(0)
    off = run_layer(attn, hidden, text, context)[1] - plain
    first, second = mask_of(0), mask_of(1)
    assert bool(on[first].abs().amax(-1).gt(0).all())
    assert not bool(off[first].any()) and torch.equal(off[second], on[second])


def test_overlapping_boxes_share_one_softmax(ms_pipe) -> None:
    boxes = [(0.0, 0.0, 0.75, 0.75), (0.25, 0.25, 1.0, 1.0)]
    attn, hidden, text = layer_inputs(ms_pipe)
    seen: list[torch.Tensor] = []
    context = context_for(ms_pipe, tokens_for(ms_pipe, ["red", "blue"], boxes=boxes), boxes=boxes)
    context.observer = lambda layer, masks, probs, out: seen.append(probs[0])
    run_layer(attn, hidden, text, context)
    probs = seen[0]
    both = box_masks(boxes, context.grid(64)).bool().all(0)
    first_mass, second_mass = probs[..., 4:8].sum(-1), probs[..., 8:12].sum(-1)
    assert bool((first_mass[:, both] > 0).all() and (second_mass[:, both] > 0).all())
    assert torch.allclose((first_mass + second_mass)[:, both], torch.ones_like(first_mass[:, both]))


def test_auto_layout_records_the_conditional_rows_phrase_attention(ms_pipe) -> None:
    attn, hidden, text = layer_inputs(ms_pipe)
    context = context_for(ms_pipe, tokens_for(ms_pipe, ["red", "blue"]), mask_threshold=0.5, start_step=1)
    context.phrase_tokens = [[2, 3], [5]]
    recorded: list[torch.Tensor] = []
    record = context.record_text_map
    context.record_text_map = lambda layer, probs, length: recorded.append(probs) or record(layer, probs, length)
    run_layer(attn, hidden, text, context)
    heads = attn.heads
    with torch.no_grad():
        q = attn.to_q(hidden[1]).view(64, heads, -1).transpose(0, 1)
        k = attn.to_k(text[1]).view(77, heads, -1).transpose(0, 1)
        probs = torch.softmax(q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5, dim=-1)  # [heads, 64, 77]
    expected = torch.stack([probs[..., [2, 3]].mean(dim=(0, 2)), probs[..., [5]].mean(dim=(0, 2))])
    (maps,) = context._text_maps.values()
    assert maps.count == 1 and torch.allclose(maps.total, expected, atol=1e-5)


def test_auto_layout_keeps_the_box_of_a_subject_whose_phrase_is_not_in_the_prompt(ms_pipe) -> None:
    context = context_for(ms_pipe, tokens_for(ms_pipe, ["red", "blue"]), mask_threshold=0.5, start_step=0)
    context.phrase_tokens = [[], [4]]
    probs = torch.rand(1, 2, 64, 77, generator=torch.Generator().manual_seed(0))
    context.record_text_map(7, probs, 64)
    masks = context.masks(7, 64)
    assert torch.equal(masks[0], context.box_masks(64)[0])
    expected = (minmax_normalise(probs[..., [4]].mean(dim=(0, 1, 3))[None]) > 0.5).float()[0]
    assert torch.equal(masks[1], expected) and not torch.equal(masks[1], context.box_masks(64)[1])


def test_the_one_pass_path_is_taken_only_when_the_text_branch_is_plain() -> None:
    from types import SimpleNamespace

    from drawer.msdiffusion.attention import _plain_attention

    attn = SimpleNamespace(spatial_norm=None, group_norm=None)
    inactive, active = SimpleNamespace(active=False), SimpleNamespace(active=True)
    assert _plain_attention(attn, {"layout": None, "scale": 1.0, "shared_attention": None})
    assert _plain_attention(attn, {"layout": inactive})
    assert not _plain_attention(attn, {"layout": active})  # Parallel-UNet regional rows
    assert not _plain_attention(attn, {"layout": inactive, "shared_attention": object()})
    assert not _plain_attention(SimpleNamespace(spatial_norm=None, group_norm=object()), {})


def test_box_masks_use_floor_and_ceil_on_each_side_of_any_grid() -> None:
    from drawer.layout_masks import Grid

    masks = box_masks([(0.1, 0.3, 0.45, 0.5)], Grid(height=4, width=6, cell=16)).view(4, 6)
    expected = torch.zeros(4, 6)
    expected[1:2, 0:3] = 1.0  # rows floor(1.2)=1 .. ceil(2.0)=2, columns floor(0.6)=0 .. ceil(2.7)=3
    assert torch.equal(masks, expected)


# --- auto layout and the drawer ------------------------------------------------------------------------------


def test_auto_layout_switches_from_box_masks_to_attention_masks_at_start_step(ms_pipe, monkeypatch) -> None:
    import drawer.msdiffusion.install as install

    contexts: list[MSDiffusionContext] = []
    steps: list[tuple[int, int, torch.Tensor, torch.Tensor | None]] = []
    build = install.build_context

    def recording(*args):
        context = build(*args)
        record = context.record_text_map
        before: dict[int, torch.Tensor | None] = {}

        def observed(layer, masks, probs, out):
            steps.append((context.step, masks.shape[1], masks.clone(), before.get(layer)))

        def record_and_keep(layer, probs, length):
            maps = context._text_maps.get(layer)
            before[layer] = None if maps is None else maps.total / maps.count
            record(layer, probs, length)

        context.observer = observed
        context.record_text_map = record_and_keep
        contexts.append(context)
        return context

    monkeypatch.setattr(install, "build_context", recording)
    drawer = Drawer(ms_pipe, ModelPreset(kind="tiny-sdxl"))
    settings = fast_settings(
        mechanisms=["subject_reference"], msdiffusion=MSDiffusionSettings(mask_threshold=0.5, start_step=2)
    )
    plan = two_subject_plan(height=128, width=128)
    drawer.draw(DrawJob(plan=plan, references={"1": png("red"), "2": png("blue")}, settings=settings))
    (context,) = contexts
    boxes = {length: context.box_masks(length) for length in (64, 16)}
    assert {s for s, *_ in steps} == {0, 1, 2, 3}
    switched = 0
    for step, length, masks, mean in steps:
        if step < 2:
            assert torch.equal(masks, boxes[length])
        else:
            assert mean is not None
            expected = (minmax_normalise(mean) > 0.5).to(masks.dtype)
            assert torch.equal(masks, expected)
            switched += int(not torch.equal(masks, boxes[length]))
    assert switched > 0


def test_without_a_threshold_the_boxes_hold_for_every_step(ms_pipe, monkeypatch) -> None:
    import drawer.msdiffusion.install as install

    seen: list[tuple[int, bool]] = []
    build = install.build_context

    def recording(*args):
        context = build(*args)
        context.observer = lambda layer, masks, probs, out: seen.append(
            (context.step, torch.equal(masks, context.box_masks(masks.shape[1])))
        )
        return context

    monkeypatch.setattr(install, "build_context", recording)
    drawer = Drawer(ms_pipe, ModelPreset(kind="tiny-sdxl"))
    job = DrawJob(
        plan=two_subject_plan(height=128, width=128),
        references={"1": png("red")},
        settings=fast_settings(mechanisms=["subject_reference"]),
    )
    drawer.draw(job)
    assert {step for step, _ in seen} == {0, 1, 2, 3} and all(same for _, same in seen)


def test_references_condition_the_drawing_only_with_subject_reference(ms_pipe, monkeypatch) -> None:
    import drawer.msdiffusion.install as install

    calls: list[int] = []
    build = install.build_context
    monkeypatch.setattr(install, "build_context", lambda *a: calls.append(1) or build(*a))
    drawer = Drawer(ms_pipe, ModelPreset(kind="tiny-sdxl"))
    plan = two_subject_plan()
    refs = {"1": png("red"), "2": png("blue")}
    off = drawer.draw(DrawJob(plan=plan, references=refs, settings=fast_settings(mechanisms=[])))
    assert calls == []
    plain = drawer.draw(DrawJob(plan=plan, settings=fast_settings(mechanisms=["subject_reference"])))
    assert calls == []  # no reference: no image branch
    on = drawer.draw(DrawJob(plan=plan, references=refs, settings=fast_settings(mechanisms=["subject_reference"])))
    assert calls == [1]
    assert off.image == plain.image and on.image != off.image


def test_msdiffusion_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="start_step"):
        DrawSettings(steps=4, msdiffusion=MSDiffusionSettings(mask_threshold=0.5, start_step=4))
    with pytest.raises(ValueError):
        MSDiffusionSettings(mask_threshold=1.5)
    assert MSDiffusionSettings().scale == 0.6 and MSDiffusionSettings().start_step == 5


# --- the preset kind, end to end -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ms_preset(tmp_path_factory: pytest.TempPathFactory) -> ModelPreset:
    """A tiny SDXL pipeline saved as a diffusers folder plus a random ms_adapter.bin: a preset of kind
    `msdiffusion` that the real loader reads like one with real weights."""
    folder = tmp_path_factory.mktemp("ms-tiny")
    pipe = build_tiny_sdxl(with_ip_adapter=False)
    pipe.save_pretrained(folder / "base")
    save_random_adapter(pipe.unet, folder / "ms_adapter.bin")
    return ModelPreset(
        kind="msdiffusion",
        base=str(folder / "base"),
        ms_adapter=str(folder),
        image_encoder=str(folder / "base"),
        image_encoder_subfolder="image_encoder",
        dtype="float32",
        device="cpu",
        max_side=1024,
    )


def test_the_preset_kind_loads_with_the_real_loader(ms_preset: ModelPreset, tmp_path: Path) -> None:
    pipe = load_pipeline(ms_preset)
    assert adapter_of(pipe) is not None
    assert any(isinstance(p, MSCrossAttnProcessor) for p in pipe.unet.attn_processors.values())
    bad = ms_preset.model_copy(update={"ms_adapter": str(tmp_path / "nothing.bin")})
    with pytest.raises(ModelLoadError, match=r"nothing\.bin does not exist"):
        load_pipeline(bad)


def test_a_turn_through_the_service_with_the_msdiffusion_preset(ms_preset: ModelPreset, tmp_path: Path, monkeypatch):
    """Turn 1 has no reference (its crops go to memory); turn 2 draws with those references through
    MS-Diffusion's image branch."""
    import time

    from fastapi.testclient import TestClient

    import drawer.msdiffusion.install as install
    from api.app import create_app
    from entrypoints.runtime import build_service
    from studio.settings import Settings, VisionSettings, default_presets
    from tests.test_end_to_end import RecordingDrawer

    built: list[MSDiffusionContext] = []
    build = install.build_context
    monkeypatch.setattr(install, "build_context", lambda *a: built.append(build(*a)) or built[-1])
    settings = Settings(
        data_dir=tmp_path,
        presets={**default_presets(), "ms-tiny": ms_preset},
        vision=VisionSettings(box_threshold=0.0, text_threshold=0.0, min_iou=0.0, device="cpu"),
    )
    drawer = RecordingDrawer(settings)
    service = build_service(settings, drawer=drawer)
    headers = {"Authorization": f"Bearer {service.db.create_key('ms')}"}
    draw = DrawSettings(preset="ms-tiny", steps=2, seed=7, prerender_steps=1, subject_init_steps=1, refine_step=1)
    plan = {
        "height": 64,
        "width": 64,
        "background": "a street",
        "items": [
            {"subject_id": "1", "phrase": "a girl", "box": {"x": 0, "y": 0, "w": 32, "h": 64}},
            {"subject_id": "2", "phrase": "a dog", "box": {"x": 32, "y": 16, "w": 32, "h": 48}},
        ],
    }
    with TestClient(create_app(service)) as client:
        session = client.post(
            "/v1/sessions", json={"height": 64, "width": 64, "settings": draw.model_dump()}, headers=headers
        ).json()
        url = f"/v1/sessions/{session['id']}/turns"
        for index in (1, 2):
            assert client.post(url, json={"plan": plan}, headers=headers).status_code == 202
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                turn = client.get(f"{url}/{index}", headers=headers).json()
                if turn["status"] in ("done", "failed"):
                    break
                time.sleep(0.05)
            assert turn["status"] == "done", turn["error"]
            picture = Image.open(io.BytesIO(client.get(turn["image_url"], headers=headers).content))
            assert picture.size == (64, 64)
    first, second = drawer.jobs
    assert first.references == {} and set(second.references) == {"1", "2"}
    (context,) = built  # turn 1 had no references: no image branch
    assert context.subjects == 2 and context.boxes[0] == (0.0, 0.0, 0.5, 1.0)


def test_cmigbench_runs_with_an_msdiffusion_preset(ms_preset: ModelPreset, tmp_path: Path, monkeypatch) -> None:
    """`studio bench cmigbench --preset <an msdiffusion preset>` loads it with the real loader and draws; the
    second turn's references (the first turn's crops) go through MS-Diffusion's image branch."""
    from typer.testing import CliRunner

    import drawer.msdiffusion.install as install
    import studio.settings
    from evaluation.cli import bench_app

    story = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cmigbench" / "story_sample.json"
    if not story.exists():
        pytest.skip("CMIGBench sample files (shared/data/cmigbench) not found")
    built: list[MSDiffusionContext] = []
    build = install.build_context
    monkeypatch.setattr(install, "build_context", lambda *a: built.append(build(*a)) or built[-1])
    settings = studio.settings.Settings(
        data_dir=tmp_path / "data",
        presets={**studio.settings.default_presets(), "ms-tiny": ms_preset},
        vision=studio.settings.VisionSettings(box_threshold=0.0, text_threshold=0.0, min_iou=0.0, device="cpu"),
    )
    monkeypatch.setattr(studio.settings, "get_settings", lambda: settings)
    args = ["cmigbench", "--data", str(story), "--out", str(tmp_path / "run"), "--preset", "ms-tiny"]
    result = CliRunner().invoke(
        bench_app, [*args, "--canvas", "64", "--limit-turns", "2", "--steps", "2", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "dialogue 1" / "turn2.png").exists()
    assert built and built[-1].subjects >= 1
