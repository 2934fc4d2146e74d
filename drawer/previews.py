"""Live previews (docs/fast_mode.md): every k-th step the current latent is decoded by a tiny autoencoder
(TAESD / TAESDXL, diffusers' `AutoencoderTiny`) into a small JPEG/WebP handed to the step callback's preview
sink (studio.fast_mode). The latent is first area-downsampled so the decoded picture is at most
`preview_max_side` pixels: the decode cost is bounded by the preview's size, not the canvas'. Nothing is decoded
when previews are off or nobody listens."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderTiny
from PIL import Image

from drawer.loading import ModelLoadError
from studio.draw import DrawSettings
from studio.fast_mode import PREVIEW_MAX_BYTES, PreviewImage, PreviewSink
from studio.settings import ModelPreset

LATENT_FACTOR = 8
"""TAESD decodes a latent cell into 8×8 pixels, like the full VAE."""


def load_tiny_autoencoder(source: str, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
    """The preview autoencoder a preset's `tiny_vae` names: 'tiny' (random), a hub id or a folder."""
    if source == "tiny":
        from drawer.tiny_fast import tiny_autoencoder_tiny

        model = tiny_autoencoder_tiny()
    else:
        path = Path(source)
        if source.startswith((".", "/")) and not path.is_dir():
            raise ModelLoadError(f"tiny_vae: no such folder {source!r}")
        try:
            model = AutoencoderTiny.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"tiny_vae: could not load {source!r} as an AutoencoderTiny: {exc}") from exc
    return model.to(device=device, dtype=dtype).eval()


class PreviewDecoder:
    """The preset's preview autoencoder, loaded at the first preview (thread-safe)."""

    def __init__(self, preset: ModelPreset) -> None:
        self.source = preset.tiny_vae
        self._model: AutoencoderTiny | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return self.source is not None

    def model(self, device: torch.device, dtype: torch.dtype) -> AutoencoderTiny:
        with self._lock:
            if self._model is None:
                if self.source is None:
                    raise ModelLoadError("previews: this preset names no preview autoencoder (preset field `tiny_vae`)")
                self._model = load_tiny_autoencoder(self.source, device, dtype)
            return self._model

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, max_side: int) -> Image.Image:
        """The first image of `latents` (pipeline scale) as a picture of at most `max_side` pixels a side."""
        model = self.model(latents.device, latents.dtype)
        latent = latents[:1]
        h, w = latent.shape[-2:]
        cells = max_side // LATENT_FACTOR
        if max(h, w) > cells:
            ratio = cells / max(h, w)
            latent = F.interpolate(latent, size=(max(1, round(h * ratio)), max(1, round(w * ratio))), mode="area")
        scale = float(getattr(model.config, "scaling_factor", 1.0))
        pixels = model.decode(latent / scale).sample[0]
        array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(array)


def encode_preview(image: Image.Image, fmt: str, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """JPEG/WebP bytes of at most `max_bytes`: quality is lowered first, then the picture is halved."""
    while True:
        for quality in (75, 50, 30):
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG" if fmt == "jpeg" else "WEBP", quality=quality)
            if buffer.tell() <= max_bytes:
                return buffer.getvalue()
        if min(image.size) <= 8:
            raise ValueError(f"a preview does not fit in {max_bytes} bytes")
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.BILINEAR)


class PreviewObserver:
    """A step observer: after every `every`-th step of a render (and its last), a preview to `sink`."""

    def __init__(
        self, decoder: PreviewDecoder, settings: DrawSettings, sink: PreviewSink, offset: int, total: int, steps: int
    ) -> None:
        self.decoder = decoder
        self.every = settings.preview_every
        self.max_side = settings.preview_max_side
        self.format = settings.preview_format
        self.sink = sink
        self.offset = offset
        """Steps of the turn before this render (pre-render), so `step` counts like the progress events."""
        self.total = total
        self.steps = steps

    def __call__(self, step: int, latents: torch.Tensor) -> None:
        done = step + 1
        if done % self.every and done != self.steps:
            return
        image = self.decoder.decode(latents, self.max_side)
        data = encode_preview(image, self.format)
        self.sink(
            PreviewImage(
                step=min(self.offset + done, self.total),
                total=self.total,
                width=image.width,
                height=image.height,
                format=self.format,
                data=data,
            )
        )
