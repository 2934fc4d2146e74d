"""One batched run of the stock pipeline with Parallel-UNet attention, latent hooks and the refine switch."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from drawer.conditioning import ReferenceEmbeds, TextRows
from drawer.parallel_attention import RegionalContext, RegionImage, build_regional_context, unet_grids
from drawer.stepping import LatentHook, Progress, StepCallbackChain


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


def regional_context(pipe: DiffusionPipeline, batch: RenderBatch) -> RegionalContext:
    """The per-turn attention layout: built once, on the UNet's device, for every attention resolution."""
    unet = pipe.unet
    return build_regional_context(
        batch.images,
        batch.region_text.to(device=pipe._execution_device, dtype=unet.dtype),
        height=batch.height,
        width=batch.width,
        grids=unet_grids(unet, batch.height, batch.width, int(pipe.vae_scale_factor)),
        fuse_scale=batch.fuse_scale,
        global_weight=batch.global_weight,
        img_scale=batch.img_scale if batch.references is not None else 0.0,
        guided=batch.guidance_scale > 1.0,
        num_references=batch.references.count if batch.references is not None else 1,
    )


class RefineSwitch:
    """Turns regional attention off from `refine_step` on (plain global-prompt attention, no IP)."""

    def __init__(self, context: RegionalContext, refine_step: int | None) -> None:
        self.context = context
        self.refine_step = refine_step
        context.active = refine_step is None or refine_step > 0

    def __call__(self, finished_step: int) -> None:
        if self.refine_step is not None and finished_step + 1 >= self.refine_step:
            self.context.active = False


@torch.no_grad()
def render(pipe: DiffusionPipeline, batch: RenderBatch, progress: Progress) -> list[Image.Image]:
    context = regional_context(pipe, batch)
    switch = RefineSwitch(context, batch.refine_step)
    guided = batch.guidance_scale > 1.0
    extra = {}
    if batch.references is not None:
        extra["ip_adapter_image_embeds"] = batch.references.pipeline_embeds(guided)
    callback = StepCallbackChain(progress, hooks=batch.hooks, listeners=[switch])
    output = pipe(
        **batch.prompts.pipeline_kwargs(),
        **extra,
        height=batch.height,
        width=batch.width,
        num_inference_steps=batch.steps,
        guidance_scale=batch.guidance_scale,
        latents=batch.latents,
        generator=torch.Generator(device="cpu").manual_seed(batch.seed),
        cross_attention_kwargs={"layout": context},
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents"],
        output_type="pil",
    )
    return list(output.images)
