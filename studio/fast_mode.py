"""Fast mode and live previews, the parts without torch (docs/fast_mode.md): whether a preset can draw a
settings' mode, the preview a drawer hands out while it draws, and the step callback that carries it.

A drawer calls `on_step(step, total)` after each step (studio.protocols.StepCallback). A caller that wants
previews passes a `StepReporter`, a step callback with a `preview` method: the drawer finds it with
`preview_sink(on_step)`; every engine passes `on_step` through unchanged, so nothing between them changes."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from studio.draw import DrawSettings, PreviewFormat
from studio.protocols import StepCallback
from studio.settings import ModelPreset

PREVIEW_MAX_BYTES = 48 * 1024
"""The most bytes one preview image may take (the encoder lowers quality, then size, to fit)."""


def fast_mode_problem(settings: DrawSettings, preset: ModelPreset, preset_name: str | None = None) -> str | None:
    """Why `preset` cannot draw `settings` (None when it can): fast mode needs the preset's few-step weights,
    previews asked for explicitly need its preview autoencoder."""
    name = f" {preset_name!r}" if preset_name else ""
    if settings.mode == "fast" and preset.fast is None:
        return f"mode: fast mode needs few-step weights, and preset{name} names none (preset field `fast`)"
    if settings.previews and preset.tiny_vae is None:
        return f"previews: preset{name} names no preview autoencoder (preset field `tiny_vae`)"
    return None


class PreviewImage(BaseModel):
    """One live preview: the latent after step `step` of `total`, decoded by the tiny autoencoder."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    step: int = Field(ge=1)
    total: int = Field(ge=1)
    width: int
    height: int
    format: PreviewFormat
    data: bytes = Field(description="the image file (JPEG or WebP), at most PREVIEW_MAX_BYTES")

    def event_data(self) -> dict[str, Any]:
        """The payload of a `preview` turn event (the image base64-encoded)."""
        return {**self.model_dump(exclude={"data"}), "data": base64.b64encode(self.data).decode("ascii")}

    @classmethod
    def from_event_data(cls, data: dict[str, Any]) -> PreviewImage:
        return cls.model_validate({**data, "data": base64.b64decode(data["data"])})

    def save(self, folder: Path, stem: str) -> Path:
        """Write the image as `folder/stem.jpg` (or `.webp`); returns the path."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{stem}.{'jpg' if self.format == 'jpeg' else 'webp'}"
        path.write_bytes(self.data)
        return path


PreviewSink = Callable[[PreviewImage], None]


class StepReporter:
    """A step callback that also takes previews: `reporter(step, total)` and `reporter.preview(image)`."""

    def __init__(self, on_step: StepCallback | None, on_preview: PreviewSink | None) -> None:
        self._on_step = on_step
        self._on_preview = on_preview

    def __call__(self, step: int, total: int) -> None:
        if self._on_step is not None:
            self._on_step(step, total)

    def preview(self, image: PreviewImage) -> None:
        if self._on_preview is not None:
            self._on_preview(image)


def preview_sink(on_step: StepCallback | None) -> PreviewSink | None:
    """Where a drawer hands its previews: the step callback's `preview` method, if it has one."""
    sink = getattr(on_step, "preview", None)
    return sink if callable(sink) else None
