"""The per-step callback handed to the pipeline: latent hooks, progress, cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from studio.failures import DrawCancelled
from studio.protocols import StepCallback

LatentHook = Callable[[int, torch.Tensor], torch.Tensor]
"""(index of the step that just finished, latents for the next step) → latents for the next step."""

StepListener = Callable[[int], None]
"""Called with the index of the step that just finished (e.g. to switch attention modes)."""

StepObserver = Callable[[int, torch.Tensor], None]
"""(index of the step that just finished, the latents after every hook) → None; reads, never changes them
(e.g. live previews)."""


class Progress:
    """Counts steps over several pipeline runs of one turn and reports them as (step, total)."""

    def __init__(self, total: int, on_step: StepCallback | None, cancel: threading.Event | None) -> None:
        self.total = total
        self.done = 0
        self.on_step = on_step
        self.cancel = cancel

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DrawCancelled("the draw was cancelled")

    def advance(self) -> None:
        self.done += 1
        if self.on_step is not None:
            self.on_step(min(self.done, self.total), self.total)
        self.check_cancel()


class StepCallbackChain:
    """A `callback_on_step_end` that runs listeners, then latent hooks, then progress and cancellation, then
    observers."""

    tensor_inputs: ClassVar[list[str]] = ["latents"]

    def __init__(
        self,
        progress: Progress,
        hooks: list[LatentHook] | None = None,
        listeners: list[StepListener] | None = None,
        observers: list[StepObserver] | None = None,
    ) -> None:
        self.progress = progress
        self.hooks = hooks or []
        self.listeners = listeners or []
        self.observers = observers or []

    def __call__(self, pipe: Any, step: int, timestep: Any, callback_kwargs: dict[str, Any]) -> dict[str, Any]:
        for listener in self.listeners:
            listener(step)
        latents = callback_kwargs["latents"]
        for hook in self.hooks:
            latents = hook(step, latents)
        self.progress.advance()
        for observer in self.observers:
            observer(step, latents)
        return {"latents": latents}
