"""Parallel-UNet (`regional` text rows, `subject_reference` image rows): the per-render regional context and
the refine switch. The processors are drawer.parallel_attention's.

With neither mechanism on, the context is inactive for the whole render: every cross-attention layer is plain
attention on the pipeline's own prompt rows (no subject rows, no image rows), like the refine phase."""

from __future__ import annotations

from typing import TYPE_CHECKING

from diffusers import DiffusionPipeline

from drawer.parallel_attention import LAYOUT_KWARG, RegionalContext, build_regional_context, unet_grids

if TYPE_CHECKING:
    from drawer.mechanisms import AttentionStack
    from drawer.render import RenderBatch


def regional_context(pipe: DiffusionPipeline, batch: RenderBatch) -> RegionalContext:
    """The per-turn attention layout: built once, on the UNet's device, for every attention resolution."""
    unet = pipe.unet
    references = batch.references if "subject_reference" in batch.mechanisms else None
    return build_regional_context(
        batch.images,
        batch.region_text.to(device=pipe._execution_device, dtype=unet.dtype),
        height=batch.height,
        width=batch.width,
        grids=unet_grids(unet, batch.height, batch.width, int(pipe.vae_scale_factor)),
        fuse_scale=batch.fuse_scale,
        global_weight=batch.global_weight,
        img_scale=batch.img_scale if references is not None else 0.0,
        guided=batch.guidance_scale > 1.0,
        num_references=batch.references.count if batch.references is not None else 1,
        region_rows="regional" in batch.mechanisms,
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


def install(pipe: DiffusionPipeline, batch: RenderBatch, stack: AttentionStack) -> None:
    context = regional_context(pipe, batch)
    stack.kwargs[LAYOUT_KWARG] = context
    if {"regional", "subject_reference"} & set(batch.mechanisms):
        stack.listeners.append(RefineSwitch(context, batch.refine_step))
        stack.installed.extend(m for m in ("regional", "subject_reference") if m in batch.mechanisms)
    else:
        context.active = False
