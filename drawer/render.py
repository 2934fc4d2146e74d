"""One batched run of the stock pipeline with Parallel-UNet attention, latent hooks and the refine switch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import DiffusionPipeline

from drawer.conditioning import ReferenceEmbeds, TextRows
from drawer.mechanisms import AttentionStack, build_stack, feature_injection
from drawer.mechanisms.global_reference import pipeline_references
from drawer.mechanisms.regional import RefineSwitch
from drawer.parallel_attention import RegionImage
from drawer.reference_controls import with_style
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
    reference_plan: object | None = None
    """Reference controls: each subject's slots and controls (drawer.reference_controls.ReferencePlan)."""
    style_reference: ReferenceEmbeds | None = None
    """The global style reference (whole canvas), attended to at `style_scale` (drawer.reference_controls)."""
    style_scale: float = 0.0
    msdiffusion: object | None = None
    """MS-Diffusion: the render's subject tokens, boxes and phrases (drawer.msdiffusion.inputs.MSDiffusionInputs)."""
    observers: list[StepObserver] = field(default_factory=list)
    """Read the latents after each step (live previews)."""


@torch.no_grad()
def render(pipe: DiffusionPipeline, batch: RenderBatch, progress: Progress, output_type: str = "pil") -> Any:
    """The batch's images (PIL), or with `output_type="latent"` its final latents (the region sampler's)."""
    if feature_injection.wanted(batch):  # shared attention's DIFT pre-pass (docs/mechanisms.md)
        quiet = Progress(0, None, progress.cancel)
        feature_injection.prepare(pipe, batch, lambda pre, attach: _run(pipe, pre, quiet, "latent", attach))
    output = _run(pipe, batch, progress, output_type)
    return list(output.images) if output_type == "pil" else output.images


def _run(
    pipe: DiffusionPipeline,
    batch: RenderBatch,
    progress: Progress,
    output_type: str,
    attach: Callable[[AttentionStack], None] | None = None,
) -> Any:
    stack = build_stack(pipe, batch)
    if attach is not None:
        attach(stack)
    guided = batch.guidance_scale > 1.0
    extra = {}
    references = with_style(pipeline_references(batch.references, batch.global_frames), batch.style_reference)
    if references is not None:
        extra["ip_adapter_image_embeds"] = references.pipeline_embeds(guided)
    callback = StepCallbackChain(progress, hooks=batch.hooks, listeners=stack.listeners, observers=batch.observers)
    return pipe(
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
        output_type=output_type,
    )
