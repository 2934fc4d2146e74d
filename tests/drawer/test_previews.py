"""Live previews and the live canvas (docs/fast_mode.md): one preview per configured step, each the tiny
autoencoder's decode of that step's latent, decodable and size-capped; previews off (or nobody listening)
decode nothing; the live-canvas cache re-encodes only the prompt rows and references that changed."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from drawer import Drawer
from drawer.live_canvas import EncodingCache
from drawer.previews import PreviewDecoder, encode_preview, load_tiny_autoencoder
from drawer.tiny_fast import tiny_autoencoder_tiny
from studio.draw import DrawJob, DrawSettings
from studio.fast_mode import PREVIEW_MAX_BYTES, PreviewImage, StepReporter, preview_sink
from studio.geometry import Box
from tests.drawer.conftest import png, two_subject_plan


class Recorder:
    """Steps and previews of one draw, and the latents each preview was decoded from."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.previews: list[PreviewImage] = []

    def reporter(self) -> StepReporter:
        return StepReporter(lambda s, t: self.steps.append((s, t)), self.previews.append)


@pytest.fixture
def decoded(tiny_drawer: Drawer, monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """Every latent the preview decoder is asked to decode."""
    calls: list[torch.Tensor] = []
    real = PreviewDecoder.decode

    def spy(self: PreviewDecoder, latents: torch.Tensor, max_side: int) -> Image.Image:
        calls.append(latents.detach().clone())
        return real(self, latents, max_side)

    monkeypatch.setattr(PreviewDecoder, "decode", spy)
    return calls


def _job(**settings: object) -> DrawJob:
    values: dict[str, object] = {"seed": 3, "mechanisms": ["regional", "subject_reference"]}
    values.update(settings)
    return DrawJob(plan=two_subject_plan(), references={"1": png("red")}, settings=DrawSettings(**values))


@pytest.mark.parametrize(("steps", "every", "expected"), [(4, 1, [1, 2, 3, 4]), (5, 2, [2, 4, 5]), (4, 4, [4])])
def test_one_preview_per_configured_step(
    tiny_drawer: Drawer,
    decoded: list[torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    steps: int,
    every: int,
    expected: list[int],
) -> None:
    record = Recorder()
    latents = _tap_latents(monkeypatch)
    tiny_drawer.draw(_job(mode="fast", steps=steps, preview_every=every), on_step=record.reporter())
    assert [p.step for p in record.previews] == expected
    assert all(p.total == steps for p in record.previews)
    # each preview decodes the latent of the step it names (the latents the pipeline continues from)
    assert len(decoded) == len(expected)
    for got, step in zip(decoded, expected, strict=True):
        assert torch.equal(got, latents[step - 1])


def _tap_latents(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The latents after each step, as the pipeline's step callback hands them on."""
    from drawer import stepping

    latents: list[torch.Tensor] = []
    real_call = stepping.StepCallbackChain.__call__

    def tap(self: stepping.StepCallbackChain, pipe: object, step: int, t: object, kwargs: dict) -> dict:
        out = real_call(self, pipe, step, t, kwargs)
        latents.append(out["latents"].detach().clone())
        return out

    monkeypatch.setattr(stepping.StepCallbackChain, "__call__", tap)
    return latents


def test_previews_are_decodable_small_images_of_the_latent(tiny_drawer: Drawer) -> None:
    record = Recorder()
    tiny_drawer.draw(_job(mode="fast", preview_max_side=48, preview_format="webp"), on_step=record.reporter())
    assert record.previews
    for preview in record.previews:
        image = Image.open(io.BytesIO(preview.data))
        image.load()
        assert image.format == "WEBP" and image.size == (preview.width, preview.height)
        assert max(image.size) <= 48 and len(preview.data) <= PREVIEW_MAX_BYTES
        # 96×64 canvas → 12×8 latents, area-downsampled to 6×4 → 48×32 pixels
        assert image.size == (48, 32)
        assert PreviewImage.from_event_data(preview.event_data()) == preview


def test_preview_pixels_are_the_tiny_autoencoder_decode() -> None:
    model = tiny_autoencoder_tiny()
    decoder = PreviewDecoder.__new__(PreviewDecoder)
    decoder.source, decoder._model = "tiny", model
    import threading

    decoder._lock = threading.Lock()
    latents = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(1))
    image = decoder.decode(latents, max_side=256)
    with torch.no_grad():
        expected = ((model.decode(latents).sample[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    assert torch.equal(torch.from_numpy(__import__("numpy").array(image)).permute(2, 0, 1), expected)


def test_encoded_previews_respect_the_byte_cap() -> None:
    noise = Image.effect_noise((1024, 1024), 100).convert("RGB")
    for fmt in ("jpeg", "webp"):
        data = encode_preview(noise, fmt, max_bytes=20_000)
        assert len(data) <= 20_000
        Image.open(io.BytesIO(data)).load()


@pytest.mark.parametrize(
    ("settings", "listening"),
    [({"mode": "fast", "previews": False}, True), ({"steps": 3}, True), ({"mode": "fast"}, False)],
)
def test_no_previews_no_decode(
    tiny_drawer: Drawer, decoded: list[torch.Tensor], settings: dict, listening: bool
) -> None:
    """Previews off (explicitly, or normal mode's default), or a step callback that takes no previews: no
    preview, and the decoder is never called."""
    record = Recorder()
    on_step = record.reporter() if listening else (lambda s, t: record.steps.append((s, t)))
    tiny_drawer.draw(_job(**settings), on_step=on_step)
    assert record.steps and record.previews == [] and decoded == []


def test_previews_in_normal_mode_when_asked(tiny_drawer: Drawer) -> None:
    record = Recorder()
    tiny_drawer.draw(_job(steps=3, previews=True, preview_every=2), on_step=record.reporter())
    assert [p.step for p in record.previews] == [2, 3]


def test_preview_steps_count_like_progress_after_a_prerender(tiny_drawer: Drawer) -> None:
    record = Recorder()
    job = _job(mode="fast", mechanisms=["regional", "subject_reference", "subject_init"])
    tiny_drawer.draw(job, on_step=record.reporter())
    total = record.steps[-1][1]
    assert total == 4 + 2  # main steps + pre-render steps
    assert [p.step for p in record.previews] == [3, 4, 5, 6] and {p.total for p in record.previews} == {total}


def test_preview_sink_is_found_only_on_reporters() -> None:
    assert preview_sink(lambda s, t: None) is None
    assert preview_sink(None) is None
    assert preview_sink(StepReporter(None, None)) is not None


def test_tiny_vae_folder_loads_and_missing_folder_is_clear(tmp_path: Path) -> None:
    tiny_autoencoder_tiny().save_pretrained(tmp_path / "taesd")
    model = load_tiny_autoencoder(str(tmp_path / "taesd"), torch.device("cpu"), torch.float32)
    assert model.config.latent_channels == 4
    from drawer.loading import ModelLoadError

    with pytest.raises(ModelLoadError, match="tiny_vae"):
        load_tiny_autoencoder(str(tmp_path / "nope"), torch.device("cpu"), torch.float32)


# --- live canvas --------------------------------------------------------------------------------------------


def test_live_canvas_re_encodes_only_what_an_edit_changed(tiny_drawer: Drawer, monkeypatch: pytest.MonkeyPatch) -> None:
    from drawer import conditioning

    prompts_encoded: list[list[str]] = []
    references_encoded: list[int] = []
    real_texts, real_refs = conditioning._encode_texts, conditioning._encode_references

    def count_texts(pipe: object, prompts: list[str], negatives: list[str]) -> object:
        prompts_encoded.append(list(prompts))
        return real_texts(pipe, prompts, negatives)

    def count_refs(pipe: object, images: list) -> object:
        references_encoded.append(len(images))
        return real_refs(pipe, images)

    monkeypatch.setattr(conditioning, "_encode_texts", count_texts)
    monkeypatch.setattr(conditioning, "_encode_references", count_refs)
    tiny_drawer.encodings = EncodingCache()
    settings = {"mode": "fast", "live_canvas": True, "mechanisms": ["regional", "subject_reference"]}
    first = tiny_drawer.draw(_job(**settings))
    assert len(prompts_encoded) == 1 and references_encoded == [1]
    again = tiny_drawer.draw(_job(**settings))
    assert len(prompts_encoded) == 1 and references_encoded == [1], "an identical redraw must encode nothing"
    assert again.image == first.image
    # edit: the dog becomes a cat and moves; only its phrase (and the global prompt naming it) is encoded
    plan = two_subject_plan()
    items = [
        plan.items[0],
        plan.items[1].model_copy(update={"phrase": "a grey cat", "box": Box(x=50, y=10, w=40, h=40)}),
    ]
    edited = _job(**settings).model_copy(update={"plan": plan.model_copy(update={"items": items})})
    tiny_drawer.draw(edited)
    assert len(prompts_encoded) == 2 and references_encoded == [1]
    assert "a grey cat" in prompts_encoded[1] and "a girl with a red scarf" not in prompts_encoded[1]
    assert len(prompts_encoded[1]) == 2  # the new phrase and the new global prompt
    # a new reference picture of the same size is encoded again; the prompts are not
    tiny_drawer.draw(edited.model_copy(update={"references": {"1": png("blue")}}))
    assert len(prompts_encoded) == 2 and references_encoded == [1, 1]


def test_live_canvas_draws_what_a_cold_draw_draws(tiny_drawer: Drawer) -> None:
    tiny_drawer.encodings = EncodingCache()
    job = _job(mode="fast", live_canvas=True)
    cold = tiny_drawer.draw(_job(mode="fast"))
    tiny_drawer.draw(job)
    warm = tiny_drawer.draw(job)
    a = torch.from_numpy(__import__("numpy").asarray(Image.open(io.BytesIO(cold.image))).astype("int16"))
    b = torch.from_numpy(__import__("numpy").asarray(Image.open(io.BytesIO(warm.image))).astype("int16"))
    assert (a - b).abs().max() <= 1  # rows encoded apart may differ in the last float bit


def test_without_live_canvas_nothing_is_cached(tiny_drawer: Drawer) -> None:
    tiny_drawer.encodings = EncodingCache()
    tiny_drawer.draw(_job(mode="fast"))
    assert tiny_drawer.encodings.text_calls == 0 and tiny_drawer.encodings.reference_calls == 0


def test_cache_is_bounded() -> None:
    cache = EncodingCache(max_rows=3)
    from drawer.conditioning import TextRows

    def encode(pipe: object, prompts: list[str], negatives: list[str]) -> TextRows:
        rows = torch.arange(len(prompts), dtype=torch.float32)[:, None, None].expand(len(prompts), 2, 2)
        return TextRows(embeds=rows.clone(), negative=-rows.clone())

    cache.texts(None, ["a", "b", "c", "d"], ["", "", "", ""], encode)  # type: ignore[arg-type]
    assert len(cache._rows) == 4  # one call's rows are never evicted while in use
    out = cache.texts(None, ["e", "a"], ["", ""], encode)  # type: ignore[arg-type]
    assert len(cache._rows) == 3 and out.embeds.shape == (2, 2, 2)
    assert ("b", "") not in cache._rows and ("a", "") in cache._rows


def test_observers_see_the_latents_after_the_hooks_and_progress() -> None:
    from drawer.stepping import Progress, StepCallbackChain

    seen: list[tuple[int, torch.Tensor, int]] = []
    progress = Progress(2, None, None)
    chain = StepCallbackChain(
        progress,
        hooks=[lambda step, latents: latents + 1],
        observers=[lambda step, latents: seen.append((step, latents, progress.done))],
    )
    out = chain(None, 0, None, {"latents": torch.zeros(1, 4, 2, 2)})
    assert torch.equal(out["latents"], torch.ones(1, 4, 2, 2))
    assert len(seen) == 1 and seen[0][0] == 0 and torch.equal(seen[0][1], out["latents"]) and seen[0][2] == 1
