"""Masked latent blending during denoising (subject initialization and editing).

Hooks run in `callback_on_step_end`, where the latents are already those of the next timestep, so pulling
them toward q(z0, t_next) is the same as blending before the next UNet call. Step 0 is handled by blending
the initial latents before the pipeline starts (`blend_initial`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_mask(pixel_mask: torch.Tensor, factor: int) -> torch.Tensor:
    """[H, W] pixel mask in [0, 1] → [1, 1, H/f, W/f] latent mask where any covered pixel counts (a slightly
    dilated silhouette, so no subject pixel is left out of the blend)."""
    pooled = F.max_pool2d(pixel_mask[None, None].float(), kernel_size=factor, stride=factor)
    return (pooled > 0).float()


class LatentBlend:
    """For the steps that finish before `until_step`: x ← (1−M)·x + M·((1−s)·x + s·q(z0, t_next)).

    `target` z0 is the clean latent, `noise` one fixed draw shared by all timesteps. With `clean_at_end`, the
    last step pulls toward z0 itself (used by editing so the kept region ends exactly on the old latents)."""

    def __init__(
        self,
        scheduler: object,
        target: torch.Tensor,
        mask: torch.Tensor,
        noise: torch.Tensor,
        strength: float,
        until_step: int,
        total_steps: int,
        clean_at_end: bool = False,
    ) -> None:
        self.scheduler = scheduler
        self.target = target
        self.mask = mask.to(device=target.device, dtype=target.dtype)
        self.noise = noise.to(device=target.device, dtype=target.dtype)
        self.strength = strength
        self.until_step = until_step
        self.total_steps = total_steps
        self.clean_at_end = clean_at_end

    def noised(self, timestep: torch.Tensor) -> torch.Tensor:
        t = timestep.reshape(1).to(self.target.device)
        return self.scheduler.add_noise(self.target, self.noise, t)

    def blend(self, latents: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        mixed = (1.0 - self.strength) * latents + self.strength * goal.to(latents.dtype)
        mask = self.mask.to(latents.dtype)
        return (1.0 - mask) * latents + mask * mixed

    def blend_initial(self, latents: torch.Tensor, first_timestep: torch.Tensor) -> torch.Tensor:
        if self.until_step <= 0:
            return latents
        return self.blend(latents, self.noised(first_timestep))

    def __call__(self, finished_step: int, latents: torch.Tensor) -> torch.Tensor:
        following = finished_step + 1
        if following >= self.total_steps:
            return self.blend(latents, self.target) if self.clean_at_end else latents
        if following >= self.until_step:
            return latents
        timesteps = self.scheduler.timesteps
        return self.blend(latents, self.noised(timesteps[following]))
