"""One batched run of the stock pipeline with Parallel-UNet attention, latent hooks and the refine switch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from drawer.conditioning import ReferenceEmbeds, TextRows
from drawer.mechanisms import build_stack
from drawer.mechanisms.global_reference import pipeline_references
from drawer.mechanisms.regional import RefineSwitch
from drawer.parallel_attention import RegionImage
from drawer.stepping import LatentHook, Progress, StepCallbackChain, StepObserver
from studio.draw import AUTOSTUDIO_MECHANISMS, Mechanism

__all__ = ["RefineSwitch", "RenderBatch", "render"]


@dataclass
class RenderBatch:
    """A batch of images drawn together. `prompts` holds each image's global prompt row (conditional and
    negative); `region_text` holds the conditional background and subject rows the images point into."""

    images: list[RegionImage]
    prompts: TextRows
    region_text: torch.Tensor
    references: ReferenceEmbeds | None
    height: int
    width: int
    steps: int
    guidance_scale: float
    latents: torch.Tensor
    fuse_scale: tuple[float, float]
    global_weight: float
    img_scale: float
    refine_step: int | None
    hooks: list[LatentHook] = field(default_factory=list)
    seed: int = 0
    """Seeds the sampler's own noise (ancestral schedulers); the initial latents are given explicitly."""
    mechanisms: tuple[Mechanism, ...] = AUTOSTUDIO_MECHANISMS
    global_frames: ReferenceEmbeds | None = None
    """Story-Adapter: the previous round's frames, attended to under one softmax at `global_scale`."""
    global_scale: float = 0.0
    shared: object | None = None
    """ConsiStory: the render's shared-attention setup (drawer.mechanisms.shared_attention.SharedSetup)."""
    observers: list[StepObserver] = field(default_factory=list)
    """Read the latents after each step (live previews)."""


@torch.no_grad()
def render(pipe: DiffusionPipeline, batch: RenderBatch, progress: Progress) -> list[Image.Image]:
    stack = build_stack(pipe, batch)
    guided = batch.guidance_scale > 1.0
    extra = {}
    references = pipeline_references(batch.references, batch.global_frames)
    if references is not None:
        extra["ip_adapter_image_embeds"] = references.pipeline_embeds(guided)
    callback = StepCallbackChain(progress, hooks=batch.hooks, listeners=stack.listeners, observers=batch.observers)
    output = pipe(
        **batch.prompts.pipeline_kwargs(),
        **extra,
        height=batch.height,
        width=batch.width,
        num_inference_steps=batch.steps,
        guidance_scale=batch.guidance_scale,
        latents=batch.latents,
        generator=torch.Generator(device="cpu").manual_seed(batch.seed),
        cross_attention_kwargs=stack.kwargs,
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
        output_type="pil",
    )
    return list(output.images)
