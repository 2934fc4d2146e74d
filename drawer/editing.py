"""Editing turns: keep the previous picture outside the regenerated boxes by mask-blended denoising.

Each step the known region's latents are replaced by the previous picture's latents noised to the next
timestep (the last step uses them clean), so the regenerated boxes are denoised in context. The schedule is
never truncated: an edit strength s < 1 pins the whole picture to the previous one for the first
round((1 − s) · steps) steps instead, which is img2img at that strength without re-indexing the noised
latents (the bug of notes §6.11). The final picture takes the previous pixels outside the (latent-cell
aligned, slightly feathered) regenerated region, so the kept region is pixel-exact.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image, ImageFilter

from drawer.latent_blend import LatentBlend, latent_mask
from drawer.subject_init import vae_encode
from studio.draw import DrawSettings
from studio.geometry import Box
from studio.plan import TurnPlan


def edit_boxes(plan: TurnPlan) -> list[Box]:
    if plan.edit is None:
        return []
    boxes = [plan.item(sid).box for sid in plan.edit.regenerate_subject_ids]
    return boxes + list(plan.edit.regenerate_boxes)


def region_mask(boxes: list[Box], height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = box.pixel_bounds(height, width)
        mask[y0:y1, x0:x1] = True
    return mask


def edit_blends(
    pipe: DiffusionPipeline,
    plan: TurnPlan,
    settings: DrawSettings,
    previous: Image.Image,
    noise: torch.Tensor,
) -> tuple[list[LatentBlend], torch.Tensor]:
    """The latent hooks of an editing turn and its latent-resolution regenerate mask [1, 1, h, w]."""
    assert plan.edit is not None
    factor = int(pipe.vae_scale_factor)
    target = vae_encode(pipe, previous)
    regenerate = latent_mask(torch.from_numpy(region_mask(edit_boxes(plan), plan.height, plan.width)), factor)
    keep = 1.0 - regenerate
    blends = []
    pinned_steps = round((1.0 - plan.edit.strength) * settings.steps)
    if pinned_steps > 0:
        everywhere = torch.ones_like(regenerate)
        blends.append(
            LatentBlend(
                pipe.scheduler, target, everywhere, noise, 1.0, until_step=pinned_steps, total_steps=settings.steps
            )
        )
    blends.append(
        LatentBlend(
            pipe.scheduler,
            target,
            keep,
            noise,
            1.0,
            until_step=settings.steps,
            total_steps=settings.steps,
            clean_at_end=True,
        )
    )
    return blends, regenerate


def composite(generated: Image.Image, previous: Image.Image, regenerate: torch.Tensor, factor: int) -> Image.Image:
    """Previous pixels outside the regenerated latent cells (exactly), generated pixels inside, the inner seam
    feathered."""
    cells = (regenerate[0, 0].cpu().numpy() > 0).astype(np.uint8) * 255
    mask = Image.fromarray(cells, mode="L").resize(generated.size, Image.Resampling.NEAREST)
    hard = np.asarray(mask)
    soft = np.asarray(mask.filter(ImageFilter.GaussianBlur(radius=max(1, factor // 2))))
    feathered = Image.fromarray(np.minimum(soft.astype(np.int32) * 2, hard).astype(np.uint8), mode="L")
    return Image.composite(generated, previous, feathered)
