"""DIFT-style feature injection for shared attention (ConsiStory's second run), off by default
(`shared_attention.feature_injection`), re-implemented from the paper facts (seed-mechanisms.md §4.1 d).

1. **Pre-pass** (`prepare`): the same batch (same latents, prompts, seed, mechanisms) is denoised with shared
   attention but without injection and without anchor recording, up to the step whose timestep is nearest
   `DIFT_TIMESTEP` (261: step 36 of 50 DDIM steps). A forward hook on the first up block whose output lies on
   the injection grid records the conditional half's output at that step (the DIFT features) and a Gaussian
   3×3 (σ 1) smooths it; the pass then stops through the pipeline's documented interrupt flag, without decoding.
   The subject masks are the pre-pass's at that step (no dropout).
2. **Correspondence** (`correspondence`): for every image i and every anchor j ≠ i, the cosine distance between
   each pixel of i and each pixel of j at the injection grid, 2 where j's pixel is outside j's subject mask;
   the nearest neighbour is the argmin, and over the anchors the closest wins. A pixel is injected when it lies
   in i's subject mask and its distance is below the Otsu threshold of i's distances.
3. **Injection** (`FeatureInjector.inject`): in the self-attention layers of the up *and* down blocks at the
   injection grid (the grid at 1/2 of the latent side: SDXL's 64² at 1024²), for the steps
   `steps // 10 … steps // 3` (5…16 of 50), the conditional half's output after `to_out` is blended at the
   injected pixels: h_i[p] ← α·h_src[nn(p)] + (1 − α)·h_i[p], α = 0.8, where h_src is the matched anchor's
   output of the same layer in the same pass. Every other pixel, the unconditional half and every other layer
   are left as they are.

Cost: the pre-pass is one more denoising run up to ~74 % of the steps (no VAE decode), so a render with
injection costs ≈1.74× the denoising of one without (the paper runs a second full generation: 2×).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from drawer.layout_masks import Grid
from drawer.mechanisms.shared_attention import KWARG, SharedAttentionContext, SharedSetup, otsu_threshold

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from drawer.mechanisms import AttentionStack
    from drawer.render import RenderBatch

DIFT_TIMESTEP = 261
"""The timestep whose up-block features give the correspondence (ConsiStory: t = 261, step 36 of 50)."""
INJECT_LEVEL = 1
"""Index of the injection grid among the UNet's attention grids: 1/2 of the latent side (SDXL 64² at 1024²)."""
ALPHA = 0.8
"""Weight of the matched anchor's output at an injected pixel."""
STEP_FRACTIONS = (10, 3)
"""Injection runs for the steps `steps // 10 … steps // 3`, both included (5…16 of 50)."""
SMOOTH_KERNEL, SMOOTH_SIGMA = 3, 1.0

Runner = Callable[["RenderBatch", Callable[["AttentionStack"], None]], None]
"""Runs a render of a batch without decoding; the callback may add to the render's attention stack."""


def injection_grid(grids: list[Grid]) -> Grid:
    return grids[min(INJECT_LEVEL, len(grids) - 1)]


def injection_steps(steps: int) -> range:
    return range(steps // STEP_FRACTIONS[0], steps // STEP_FRACTIONS[1] + 1)


# --- correspondence ------------------------------------------------------------------------------------------


def nearest_neighbours(
    target: torch.Tensor, source: torch.Tensor, source_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each target feature [L, C], the nearest source feature [S, C] in cosine distance among the sources
    inside `source_mask` [S] (the others are at distance 2): (index [L], distance [L])."""
    distance = 1 - F.normalize(target.float(), dim=-1) @ F.normalize(source.float(), dim=-1).T
    distance = distance.masked_fill(~source_mask.view(1, -1), 2.0)
    best, index = distance.min(dim=1)
    return index, best


@dataclass
class Correspondence:
    """Per image of the batch, at the injection grid: the anchor image each pixel is matched in (-1: none), the
    matched pixel there, its distance, and whether the pixel is injected."""

    source: torch.Tensor
    index: torch.Tensor
    distance: torch.Tensor
    injected: torch.Tensor


def correspondence(features: torch.Tensor, masks: torch.Tensor, anchors: list[int], grid: Grid) -> Correspondence:
    """Dense correspondence from DIFT features [images, C, h, w] and subject masks [images, L] at `grid`."""
    images = features.shape[0]
    flat = F.interpolate(features.float(), size=(grid.height, grid.width), mode="bilinear", align_corners=False)
    flat = flat.flatten(2).transpose(1, 2)
    length = grid.tokens
    source = torch.full((images, length), -1, dtype=torch.long)
    index = torch.zeros((images, length), dtype=torch.long)
    distance = torch.full((images, length), 2.0)
    injected = torch.zeros((images, length), dtype=torch.bool)
    for i in range(images):
        for j in anchors:
            if j == i:
                continue
            nn_index, nn_distance = nearest_neighbours(flat[i], flat[j], masks[j])
            closer = nn_distance < distance[i]
            source[i] = torch.where(closer, j, source[i])
            index[i] = torch.where(closer, nn_index, index[i])
            distance[i] = torch.where(closer, nn_distance, distance[i])
        if bool((source[i] >= 0).any()):
            injected[i] = masks[i] & (distance[i] < otsu_threshold(distance[i])) & (source[i] >= 0)
    return Correspondence(source=source, index=index, distance=distance, injected=injected)


def smooth(features: torch.Tensor) -> torch.Tensor:
    """Gaussian smoothing per channel (3×3, σ 1) of [B, C, h, w]."""
    offsets = torch.arange(SMOOTH_KERNEL, dtype=torch.float32) - (SMOOTH_KERNEL - 1) / 2
    line = torch.exp(-(offsets**2) / (2 * SMOOTH_SIGMA**2))
    kernel = torch.outer(line, line)
    kernel = (kernel / kernel.sum()).to(features)
    channels = features.shape[1]
    padded = F.pad(features, [SMOOTH_KERNEL // 2] * 4, mode="replicate")
    return F.conv2d(padded, kernel.expand(channels, 1, -1, -1), groups=channels)


# --- injection -----------------------------------------------------------------------------------------------


@dataclass
class FeatureInjector:
    """Blends the conditional half's self-attention outputs at the injected pixels toward the matched anchors'."""

    match: Correspondence
    grid: Grid
    images: int
    guided: bool
    steps: int
    alpha: float = ALPHA
    injected_at: list[tuple[str, int]] = field(default_factory=list)
    """(layer, step) of every injection made (what tests observe)."""

    def active(self, step: int) -> bool:
        return step in injection_steps(self.steps)

    def weights(self) -> torch.Tensor:
        """Per image and pixel, the weight of the matched anchor's output: α where injected, else 0."""
        return self.match.injected.float() * self.alpha

    def inject(self, layer: str, step: int, out: torch.Tensor) -> torch.Tensor:
        if out.ndim != 3 or out.shape[1] != self.grid.tokens or not self.active(step):
            return out
        length, channels = out.shape[1], out.shape[2]
        offset = self.images if self.guided else 0
        cond = out[offset : offset + self.images]
        device = out.device
        source = (self.match.source.clamp(min=0) * length + self.match.index).to(device)
        matched = cond.reshape(-1, channels).index_select(0, source.flatten()).view_as(cond)
        injected = self.match.injected.to(device).unsqueeze(-1)
        blended = torch.where(injected, self.alpha * matched + (1 - self.alpha) * cond, cond)
        self.injected_at.append((layer, step))
        return torch.cat([out[:offset], blended, out[offset + self.images :]])


# --- the pre-pass ---------------------------------------------------------------------------------------------


def wanted(batch: RenderBatch) -> bool:
    """Injection needs a source: an image of the batch with an anchor other than itself."""
    setup = batch.shared
    return (
        "shared_attention" in batch.mechanisms
        and isinstance(setup, SharedSetup)
        and setup.feature_injection
        and any(j != i for j in setup.anchors for i in range(len(setup.subject_tokens)))
    )


class DiftRecorder:
    """Records the DIFT features (conditional half, first up block at the injection grid) at the step whose
    timestep is nearest DIFT_TIMESTEP, with the subject masks of that step, and stops the run there."""

    def __init__(self, pipe: DiffusionPipeline, grid: Grid, images: int, guided: bool) -> None:
        self.pipe = pipe
        self.grid = grid
        self.images = images
        self.guided = guided
        self.step = 0
        self.target: int | None = None
        self.features: torch.Tensor | None = None
        self.masks: torch.Tensor | None = None
        self.context: SharedAttentionContext | None = None

    def attach(self, stack: AttentionStack) -> None:
        context = stack.kwargs.get(KWARG)
        assert isinstance(context, SharedAttentionContext)
        self.context = context
        stack.listeners.append(self.after_step)

    def _before_unet(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if self.target is None:
            timesteps = self.pipe.scheduler.timesteps.float().cpu()
            self.target = int(torch.argmin((timesteps - DIFT_TIMESTEP).abs()))

    def _after_up_block(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self.features is not None or self.step != self.target:
            return
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[-2:] != (self.grid.height, self.grid.width):
            return
        offset = self.images if self.guided else 0
        self.features = smooth(hidden[offset : offset + self.images].float()).cpu()

    def after_step(self, finished_step: int) -> None:
        if finished_step == self.target and self.context is not None and self.context.subject_masks is not None:
            self.masks = torch.stack([self.context.union_mask(i, self.grid) for i in range(self.images)])
        self.step = finished_step + 1
        if self.target is not None and finished_step >= self.target:
            self.pipe._interrupt = True  # diffusers' documented way to stop a run from a step callback

    @contextmanager
    def hooks(self) -> Iterator[None]:
        unet = self.pipe.unet
        handles = [unet.register_forward_pre_hook(self._before_unet)]
        handles += [block.register_forward_hook(self._after_up_block) for block in unet.up_blocks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def prepare(pipe: DiffusionPipeline, batch: RenderBatch, run: Runner) -> None:
    """The DIFT pre-pass: sets `batch.shared.correspondence` (None when no subject mask formed in time)."""
    from drawer.parallel_attention import unet_grids

    setup = batch.shared
    assert isinstance(setup, SharedSetup)
    grid = injection_grid(unet_grids(pipe.unet, batch.height, batch.width, int(pipe.vae_scale_factor)))
    pre_setup = dataclasses.replace(setup, feature_injection=False, record={}, recorded={}, correspondence=None)
    pre_batch = dataclasses.replace(batch, shared=pre_setup, latents=batch.latents.clone(), observers=[])
    recorder = DiftRecorder(pipe, grid, len(setup.subject_tokens), batch.guidance_scale > 1.0)
    with recorder.hooks():
        run(pre_batch, recorder.attach)
    if recorder.features is None or recorder.masks is None:
        setup.correspondence = None
        return
    setup.correspondence = correspondence(recorder.features, recorder.masks, setup.anchors, grid)


def injector(setup: SharedSetup, grids: list[Grid], guided: bool, steps: int) -> FeatureInjector | None:
    if not setup.feature_injection or not isinstance(setup.correspondence, Correspondence):
        return None
    return FeatureInjector(setup.correspondence, injection_grid(grids), len(setup.subject_tokens), guided, steps)
