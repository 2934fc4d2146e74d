"""Subject-initialized generation (notes §2): pre-render every subject group in one batch, find and cut out
each subject, paste it aspect-kept and centred into its box on a neutral canvas, VAE-encode the collage and
return the latent blend that pulls the masked region toward it during the first steps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from drawer.images import NEUTRAL_GREY
from drawer.latent_blend import LatentBlend, latent_mask
from drawer.render import RenderBatch, render
from drawer.stepping import Progress
from studio.draw import DrawSettings, SubjectCrop
from studio.geometry import Box
from studio.images import decode_mask_png
from studio.plan import PlanItem, TurnPlan
from studio.protocols import LocateTarget, SubjectLocator
from studio.subjects import parent_of


@dataclass
class SubjectGroup:
    """A mother subject and its components, drawn together in one pre-render."""

    mother: PlanItem
    members: list[PlanItem]


def group_subjects(plan: TurnPlan, only: set[str] | None = None) -> list[SubjectGroup]:
    groups: dict[str, SubjectGroup] = {}
    for item in plan.items:
        if parent_of(item.subject_id) is None and (only is None or item.subject_id in only):
            groups[item.subject_id] = SubjectGroup(mother=item, members=[item])
    for item in plan.items:
        parent = parent_of(item.subject_id)
        if parent is not None and parent in groups:
            groups[parent].members.append(item)
    return list(groups.values())


def union_box(boxes: list[Box]) -> Box:
    x0 = min(b.x for b in boxes)
    y0 = min(b.y for b in boxes)
    x1 = max(b.x + b.w for b in boxes)
    y1 = max(b.y + b.h for b in boxes)
    return Box.from_xyxy(x0, y0, x1, y1)


def fill_canvas(boxes: list[Box], height: int, width: int) -> list[Box]:
    """Rescale boxes (aspect kept) so that their union fills the canvas, centred."""
    union = union_box(boxes)
    scale = min(width / union.w, height / union.h)
    dx = (width - union.w * scale) / 2 - union.x * scale
    dy = (height - union.h * scale) / 2 - union.y * scale
    return [Box(x=b.x * scale + dx, y=b.y * scale + dy, w=b.w * scale, h=b.h * scale) for b in boxes]


def prerender_canvas(height: int, width: int, max_side: int | None, factor: int = 8) -> tuple[int, int]:
    """The (height, width) the groups are pre-rendered at: the turn's canvas, or with `max_side` that canvas
    scaled down, aspect kept, so that its longer side is at most `max_side`; sides are multiples of `factor`
    and at least 64 px (or the turn's side, if smaller)."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)

    def side(value: int) -> int:
        return max(int(value * scale) // factor * factor, min(value, 64))

    return side(height), side(width)


@dataclass
class Collage:
    image: Image.Image
    mask: np.ndarray
    pasted: list[str] = field(default_factory=list)


def _crop_mask(crop: SubjectCrop, height: int, width: int) -> np.ndarray | None:
    if crop.mask is not None:
        mask = decode_mask_png(crop.mask, (width, height))
        return mask if mask.any() else None
    if crop.box is not None:
        mask = np.zeros((height, width), dtype=bool)
        x0, y0, x1, y1 = crop.box.pixel_bounds(height, width)
        mask[y0:y1, x0:x1] = True
        return mask if mask.any() else None
    return None


def make_collage(
    cutouts: list[tuple[str, Image.Image, np.ndarray, Box]],
    height: int,
    width: int,
    regions: dict[str, np.ndarray] | None = None,
) -> Collage:
    """Paste each (id, pre-render, mask, target box) cut-out, aspect kept and centred, into its target box on a
    neutral grey canvas. Larger boxes go first, so smaller (usually nearer) subjects stay visible. A subject
    with a region mask (`regions`: id → bool canvas mask) is pasted only inside it (docs/regions.md)."""
    canvas = Image.new("RGB", (width, height), NEUTRAL_GREY)
    collage_mask = np.zeros((height, width), dtype=bool)
    pasted = []
    for subject_id, image, mask, target in sorted(cutouts, key=lambda c: -c[3].area):
        rows, cols = np.nonzero(mask)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        piece = image.crop((left, top, right, bottom))
        piece_mask = Image.fromarray((mask[top:bottom, left:right] * 255).astype(np.uint8), mode="L")
        tx0, ty0, tx1, ty1 = target.pixel_bounds(height, width)
        box_w, box_h = max(tx1 - tx0, 1), max(ty1 - ty0, 1)
        scale = min(box_w / piece.width, box_h / piece.height)
        size = (max(1, round(piece.width * scale)), max(1, round(piece.height * scale)))
        piece = piece.resize(size, Image.Resampling.LANCZOS)
        piece_mask = piece_mask.resize(size, Image.Resampling.NEAREST)
        offset = (tx0 + (box_w - size[0]) // 2, ty0 + (box_h - size[1]) // 2)
        region = (regions or {}).get(subject_id)
        if region is not None:
            piece_mask = Image.fromarray((np.asarray(piece_mask) * region[_window(offset, size)]).astype(np.uint8), "L")
        canvas.paste(piece, offset, piece_mask)
        layer = Image.new("L", (width, height), 0)
        layer.paste(piece_mask, offset)
        collage_mask |= np.asarray(layer) > 127
        pasted.append(subject_id)
    return Collage(image=canvas, mask=collage_mask, pasted=pasted)


def _window(offset: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """The canvas rows and columns a piece pasted at `offset` covers (the piece is always inside its box)."""
    x, y = offset
    return slice(y, y + size[1]), slice(x, x + size[0])


@torch.no_grad()
def vae_encode(pipe: DiffusionPipeline, image: Image.Image) -> torch.Tensor:
    """Deterministic latents (the posterior mode) of an image, scaled as the UNet expects them."""
    vae = pipe.vae
    # A VAE that overflows in float16 (SDXL's original one) is run in float32, as the pipelines do for decoding.
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    dtype = torch.float32 if upcast else vae.dtype
    pixels = pipe.image_processor.preprocess(image).to(device=pipe._execution_device, dtype=dtype)
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        latents = vae.encode(pixels).latent_dist.mode()
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return (latents * vae.config.scaling_factor).to(pipe.unet.dtype)


def paste_regions(plan: TurnPlan) -> dict[str, np.ndarray]:
    """Each masked item's paste region: its (unfeathered) mask's pixels of weight ≥ 0.5."""
    height, width = plan.height, plan.width
    return {item.subject_id: item.mask.raster(height, width) >= 0.5 for item in plan.items if item.mask is not None}


@dataclass
class PrerenderInputs:
    """What the drawer hands to the pre-render: the encoding helpers' outputs for the subject groups."""

    groups: list[SubjectGroup]
    batch: RenderBatch


@dataclass
class SubjectInitResult:
    blend: LatentBlend | None
    collage: Collage | None
    crops: dict[str, SubjectCrop]
    skipped: dict[str, str]
    prerenders: list[Image.Image]


def prerender_targets(group: SubjectGroup, boxes: list[Box]) -> list[LocateTarget]:
    """What to look for in a group's pre-render: the mother and its components at their rescaled boxes. Every
    member found yields a crop (a first reference for a member without one, as AutoStudio stores them); only
    the mother is pasted into the collage."""
    mother_id = group.mother.subject_id
    return [
        LocateTarget(
            subject_id=member.subject_id,
            name=member.detection_name,
            planned_box=box,
            parent_id=None if member is group.mother else mother_id,
        )
        for member, box in zip(group.members, boxes, strict=True)
    ]


def prerender_and_collage(
    pipe: DiffusionPipeline,
    inputs: PrerenderInputs,
    plan: TurnPlan,
    settings: DrawSettings,
    locator: SubjectLocator,
    noise: torch.Tensor,
    progress: Progress,
) -> SubjectInitResult:
    """Pre-render the groups in one batch, locate each group's members, and build the collage blend from the
    mothers. A mother that is not found is skipped (its box is left to the regular denoising)."""
    images = render(pipe, inputs.batch, progress)
    crops: dict[str, SubjectCrop] = {}
    skipped: dict[str, str] = {}
    cutouts = []
    for group, spec, image in zip(inputs.groups, inputs.batch.images, images, strict=True):
        mother = group.mother
        located = locator.locate(image, prerender_targets(group, spec.boxes))
        crops.update({sid: crop for sid, crop in located.items() if crop.found})
        found = located.get(mother.subject_id)
        mask = _crop_mask(found, image.height, image.width) if found is not None and found.found else None
        if found is None or mask is None:
            skipped[mother.subject_id] = (found.reason if found is not None else None) or "not found in its pre-render"
            crops.pop(mother.subject_id, None)
            continue
        cutouts.append((mother.subject_id, image, mask, mother.box))
    if not cutouts:
        return SubjectInitResult(None, None, crops, skipped, images)
    collage = make_collage(cutouts, plan.height, plan.width, regions=paste_regions(plan))
    target = vae_encode(pipe, collage.image)
    mask = latent_mask(torch.from_numpy(collage.mask), int(pipe.vae_scale_factor))
    blend = LatentBlend(
        pipe.scheduler,
        target=target,
        mask=mask,
        noise=noise,
        strength=settings.subject_init_strength,
        until_step=settings.subject_init_steps,
        total_steps=settings.steps,
    )
    return SubjectInitResult(blend, collage, crops, skipped, images)
