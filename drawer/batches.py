"""Assembling the render batches of a turn: the main picture and the subject pre-renders."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from drawer.conditioning import ReferenceEmbeds, encode_texts
from drawer.live_canvas import active_cache, item_canvas_weights, region_key
from drawer.parallel_attention import RegionImage
from drawer.region_masks import lerp_rows
from drawer.render import RenderBatch
from drawer.stepping import LatentHook
from drawer.subject_init import PrerenderInputs, fill_canvas, group_subjects
from studio.draw import DrawSettings
from studio.plan import PlanItem, TurnPlan
from studio.subjects import parent_of


def scene_prompt(plan: TurnPlan, items: list[PlanItem]) -> str:
    """The global prompt of a picture showing `items`: "<background> with <phrase>, …" over the mother subjects
    only, as AutoStudio builds it (a component's phrase conditions its own box, and is usually part of its
    mother's phrase already)."""
    mothers = [item for item in items if parent_of(item.subject_id) is None]
    return plan.model_copy(update={"items": mothers}).global_prompt()


def region_masks(plan: TurnPlan) -> list[torch.Tensor | None] | None:
    """Each item's soft canvas weights (None: a plain box); None when every item is a plain box."""
    masks = [item_canvas_weights(item, plan.height, plan.width) for item in plan.items]
    return masks if any(mask is not None for mask in masks) else None


def region_negatives(items: list[PlanItem], first_row: int) -> tuple[list[str], list[int | None] | None]:
    """The regions' own negative prompts to encode as extra rows (from `first_row` of the region rows on), and
    each item's row (None: the plan's negative); no rows at all when no item has one."""
    texts: list[str] = []
    rows: list[int | None] = []
    for item in items:
        if item.negative is None:
            rows.append(None)
            continue
        rows.append(first_row + len(texts))
        texts.append(item.negative)
    return texts, (rows if texts else None)


def main_batch(
    pipe: DiffusionPipeline,
    plan: TurnPlan,
    settings: DrawSettings,
    references: ReferenceEmbeds | None,
    reference_index: dict[str, int],
    latents: torch.Tensor,
    hooks: list[LatentHook],
    seed: int = 0,
) -> RenderBatch:
    """One image: rows [global (mothers only), background, subject phrases…] encoded in one call (then the
    regions' own negative prompts, when some have one: docs/regions.md)."""
    prompts = [scene_prompt(plan, plan.items), plan.background, *(item.phrase for item in plan.items)]
    negatives, negative_rows = region_negatives(plan.items, first_row=len(prompts) - 1)
    text = encode_texts(pipe, prompts + negatives, [plan.negative_prompt] * (len(prompts) + len(negatives)))
    subject_rows = list(range(1, len(plan.items) + 1))
    image = RegionImage(
        boxes=[item.box for item in plan.items],  # type: ignore[misc]
        background_row=0,
        subject_rows=subject_rows,
        reference_index=[reference_index.get(item.subject_id) for item in plan.items],
        masks=region_masks(plan),
        negative_rows=negative_rows,
        region_keys=[region_key(item, plan.height, plan.width) for item in plan.items] if active_cache() else None,
    )
    region_text = lerp_rows(text.embeds[1:], 0, subject_rows, [item.prompt_strength for item in plan.items])
    return RenderBatch(
        images=[image],
        prompts=text.select([0]),
        region_text=region_text,
        references=references,
        height=plan.height,
        width=plan.width,
        steps=settings.steps,
        guidance_scale=settings.guidance_scale,
        latents=latents,
        fuse_scale=settings.fuse_scale,
        global_weight=settings.global_weight,
        img_scale=settings.img_scale,
        refine_step=settings.refine_step,
        hooks=hooks,
        seed=seed,
        mechanisms=tuple(settings.mechanisms),
        global_scale=settings.global_reference.scale,
    )


def prerender_inputs(
    pipe: DiffusionPipeline,
    plan: TurnPlan,
    settings: DrawSettings,
    references: ReferenceEmbeds | None,
    reference_index: dict[str, int],
    noise: torch.Tensor,
    only: set[str] | None = None,
    seed: int = 0,
    canvas: tuple[int, int] | None = None,
) -> PrerenderInputs | None:
    """One image per subject group (a mother and its components): the same background, the group's boxes
    rescaled to fill the canvas, each member's reference as its IP conditioning; no refine switch. `canvas`
    (height, width; default the turn's) is the pre-render's size; its initial latents are the top-left corner of
    the turn's `noise` (the same seed)."""
    groups = group_subjects(plan, only)
    if not groups:
        return None
    members = [item for group in groups for item in group.members]
    prompts = [scene_prompt(plan, group.members) for group in groups]
    prompts += [plan.background, *(m.phrase for m in members)]
    text = encode_texts(pipe, prompts, [plan.negative_prompt] * len(prompts))
    height, width = canvas or (plan.height, plan.width)
    images, row = [], 1
    for group in groups:
        boxes = fill_canvas([m.box for m in group.members], height, width)
        rows = list(range(row, row + len(group.members)))
        row += len(group.members)
        images.append(
            RegionImage(
                boxes=boxes,
                background_row=0,
                subject_rows=rows,
                reference_index=[reference_index.get(m.subject_id) for m in group.members],
            )
        )
    count = len(groups)
    corner = _corner(noise, height, width, plan.height, plan.width)
    batch = RenderBatch(
        images=images,
        prompts=text.select(list(range(count))),
        region_text=text.embeds[count:],
        references=references,
        height=height,
        width=width,
        steps=settings.prerender_steps,
        guidance_scale=settings.guidance_scale,
        latents=corner.expand(count, *corner.shape[1:]).contiguous(),
        fuse_scale=settings.fuse_scale,
        global_weight=settings.global_weight,
        img_scale=settings.img_scale,
        refine_step=None,
        seed=seed,
        mechanisms=tuple(m for m in settings.mechanisms if m in ("regional", "subject_reference")),
    )
    return PrerenderInputs(groups=groups, batch=batch)


def _corner(noise: torch.Tensor, height: int, width: int, full_height: int, full_width: int) -> torch.Tensor:
    """The top-left part of the turn's initial noise that covers a height x width canvas."""
    if (height, width) == (full_height, full_width):
        return noise
    rows, cols = noise.shape[-2] * height // full_height, noise.shape[-1] * width // full_width
    return noise[..., :rows, :cols]
