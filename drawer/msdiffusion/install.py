"""The attention-stack installer of MS-Diffusion (registered in drawer.mechanisms): per render, the
`msdiffusion` context for the processors and its step listener."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffusers import DiffusionPipeline

from drawer.msdiffusion.attention import KWARG
from drawer.msdiffusion.context import MSDiffusionContext
from drawer.msdiffusion.controls import subject_scales, window_hook
from drawer.msdiffusion.inputs import MSDiffusionInputs

if TYPE_CHECKING:
    from drawer.mechanisms import AttentionStack
    from drawer.render import RenderBatch


def build_context(pipe: DiffusionPipeline, inputs: MSDiffusionInputs, batch: RenderBatch) -> MSDiffusionContext:
    from drawer.parallel_attention import unet_grids

    unet = pipe.unet
    settings = inputs.settings
    return MSDiffusionContext(
        inputs.tokens.to(device=pipe._execution_device, dtype=unet.dtype),
        num_dummy=inputs.num_dummy,
        num_queries=inputs.num_queries,
        boxes=inputs.boxes,
        grids=unet_grids(unet, batch.height, batch.width, int(pipe.vae_scale_factor)),
        scale=settings.scale,
        subject_scales=subject_scales(settings.scale, inputs.controls),
        subject_active=window_hook(inputs.controls, batch.steps),
        token_counts=inputs.token_counts,
        mask_threshold=settings.mask_threshold,
        start_step=settings.start_step,
        phrase_tokens=inputs.phrase_tokens,
        images=len(batch.images),
    )


def install(pipe: DiffusionPipeline, batch: RenderBatch, stack: AttentionStack) -> None:
    inputs = getattr(batch, "msdiffusion", None)
    if inputs is None or "subject_reference" not in batch.mechanisms:
        return
    if len(batch.images) != 1:
        raise ValueError("MS-Diffusion renders one picture per batch")
    context = build_context(pipe, inputs, batch)
    stack.kwargs[KWARG] = context
    stack.listeners.append(context.after_step)
    stack.installed.append("msdiffusion")
