"""The Drawer: one turn's DrawJob in, its picture and subject crops out."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from drawer.conditioning import encode_references, encode_texts, has_ip_adapter
from drawer.images import decode_image, png_bytes
from drawer.standin import PlannedBoxLocator
from drawer.stepping import Progress, StepCallbackChain
from drawer.validation import check_job
from studio.draw import DrawJob, DrawResult
from studio.plan import TurnPlan
from studio.protocols import LocateTarget, StepCallback, SubjectLocator
from studio.settings import ModelPreset
from studio.subjects import parent_of


class Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def locate_targets(plan: TurnPlan) -> list[LocateTarget]:
    return [
        LocateTarget(
            subject_id=item.subject_id,
            name=item.detection_name,
            planned_box=item.box,
            parent_id=parent_of(item.subject_id),
        )
        for item in plan.items
    ]


class Drawer:
    """Draws turns with one loaded pipeline. Thread-safe: draws are serialized on the pipeline."""

    def __init__(
        self,
        pipe: DiffusionPipeline,
        preset: ModelPreset,
        locator: SubjectLocator | None = None,
        max_subjects: int = 8,
    ) -> None:
        self.pipe = pipe
        self.preset = preset
        self.locator: SubjectLocator = locator if locator is not None else PlannedBoxLocator()
        self.max_subjects = max_subjects
        self._lock = threading.Lock()

    @property
    def vae_scale_factor(self) -> int:
        return int(self.pipe.vae_scale_factor)

    def draw(
        self,
        job: DrawJob,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> DrawResult:
        with self._lock:
            return self._draw(job, on_step, cancel)

    def _draw(self, job: DrawJob, on_step: StepCallback | None, cancel: threading.Event | None) -> DrawResult:
        timer = Timer()
        plan, settings = job.plan, job.settings
        check_job(
            job, max_side=self.preset.max_side, size_factor=self.vae_scale_factor, max_subjects=self.max_subjects
        )
        seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(2**63)
        with timer.stage("decode_inputs"):
            references = {
                sid: decode_image(data, f"the reference image of subject {sid}") for sid, data in job.references.items()
            }
        progress = Progress(settings.steps, on_step, cancel)
        progress.check_cancel()
        pipe = self.pipe
        with timer.stage("encode"):
            text = encode_texts(pipe, [plan.global_prompt()], [plan.negative_prompt])
            extra = {}
            if has_ip_adapter(pipe):
                refs = encode_references(pipe, list(references.values()))
                extra["ip_adapter_image_embeds"] = refs.pipeline_embeds(settings.guidance_scale > 1.0)
        with timer.stage("denoise"):
            latents = self._initial_noise(plan, seed, batch=1)
            output = pipe(
                **text.pipeline_kwargs(),
                **extra,
                height=plan.height,
                width=plan.width,
                num_inference_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                latents=latents,
                callback_on_step_end=StepCallbackChain(progress),
                callback_on_step_end_tensor_inputs=["latents"],
                output_type="pil",
            )
        image: Image.Image = output.images[0]
        with timer.stage("locate"):
            crops = self.locator.locate(image, locate_targets(plan)) if plan.items else {}
        return DrawResult(
            image=png_bytes(image),
            width=image.width,
            height=image.height,
            seed=seed,
            crops=crops,
            timings=timer.timings,
        )

    def _initial_noise(self, plan: TurnPlan, seed: int, batch: int) -> torch.Tensor:
        """Unscaled Gaussian noise from a CPU generator, so a seed gives the same picture on any device."""
        factor = self.vae_scale_factor
        shape = (batch, self.pipe.unet.config.in_channels, plan.height // factor, plan.width // factor)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        return noise.to(device=self.pipe._execution_device, dtype=self.pipe.unet.dtype)


def load_drawer(preset: ModelPreset, locator: SubjectLocator | None = None, max_subjects: int = 8) -> Drawer:
    """Load the preset's models and return a ready Drawer (implements `studio.protocols.Drawer`)."""
    from drawer.loading import load_pipeline

    return Drawer(load_pipeline(preset), preset, locator=locator, max_subjects=max_subjects)
