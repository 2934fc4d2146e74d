"""The region sampler (`DrawSettings.sampler = "regions"`): StreamMultiDiffusion's MultiDiffusion with its fixes,
as a drawer mode (docs/regions.md, seed-mechanisms.md §2).

Every step the UNet predicts each region separately (one batch row per region: the background over the whole
canvas, then each plan item with its own prompt, negative prompt and, with `subject_reference`, its own
reference rows); the predictions are blended in latent space:

1. masks: each region's canvas weights (mask or box; a mask covered by a later one is multiplied by
   `cover_alpha`; feathered by `mask_std`, times `mask_strength`), averaged onto the latent grid, then quantized
   against the step's noise level n_k (discrete [m > n_k], continuous, or semi-continuous), so they grow as
   the noise falls;
2. bootstrapping (the first `bootstrap_steps`): each item's row sees its region on a noised white background,
   rolled so that its mask's box is centred; predictions are rolled back, and leak suppression lowers the mask
   where the prediction stayed background: m ← m·(2·sigmoid(mean_c (x0 − bg)² / s) − 1);
3. latent pre-averaging on the denoised estimates x0 of the rows: x0 = Σ m_j x0_j / Σ m_j, the background
   row's x0 where no mask reaches;
4. re-noising: the blended x0 goes back through the scheduler's own step, as the model output it implies for
   the shared latent (so DDIM, DPM-Solver, Euler and LCM each re-noise the way they do).

Why a scheduler wrapper: `callback_on_step_end` runs after `scheduler.step`, so it only ever sees x_{t-1}, never
the per-region denoised estimates, and it cannot give the UNet per-region inputs for the first step. Both
places the blend needs — the UNet input of every step (`scale_model_input`) and the step from prediction to
next latent (`step`) — are scheduler methods, so the stock pipeline runs unchanged with `RegionScheduler`, a
wrapper of its own scheduler, in place for one render (no copied denoising loop, SD1.5 and SDXL alike).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from diffusers import DiffusionPipeline
from PIL import Image

from drawer.conditioning import TextRows, encode_texts
from drawer.layout_masks import Grid
from drawer.parallel_attention import RegionImage
from drawer.region_masks import feather, grid_coverage, raw_weights
from drawer.render import RenderBatch, render
from drawer.stepping import Progress
from drawer.subject_init import vae_encode
from studio.draw import DrawSettings
from studio.failures import DrawError
from studio.geometry import Box
from studio.plan import TurnPlan
from studio.regions import RegionSamplerSettings

# --- masks ------------------------------------------------------------------------------------------------


def region_masks(plan: TurnPlan, factor: int, cover_alpha: float) -> torch.Tensor:
    """[1 + items, 1, h, w] latent-grid weights: the background (the whole canvas), then each item. Each mask is
    multiplied by `cover_alpha` where any later mask covers it (before feathering)."""
    height, width = plan.height, plan.width
    grid = Grid(height // factor, width // factor, factor)
    canvases: list[tuple[torch.Tensor, float, float]] = [(torch.ones(height, width, dtype=torch.float64), 0.0, 1.0)]
    canvases += [(raw_weights(item, height, width), item.mask_std, item.mask_strength) for item in plan.items]
    later = torch.zeros(height, width, dtype=torch.bool)
    out = []
    for weights, std, strength in reversed(canvases):
        covered = torch.where(later, cover_alpha, 1.0).to(torch.float64)
        later |= weights > 0
        out.append(grid_coverage(feather(weights * covered, std) * strength, grid, height, width))
    return torch.stack(out[::-1])[:, None].float()


def noise_level(a: float, b: float) -> float:
    """The noise level of a latent a·x0 + b·ε: its noise's share of the signal-plus-noise norm."""
    return b / math.sqrt(a * a + b * b)


def quantize(masks: torch.Tensor, levels: list[float], step: int, mode: str) -> torch.Tensor:
    """Masks at step `step` against noise levels n_0 > … > n_{K−1} (n_K = 0)."""
    n_k = levels[step]
    n_next = levels[step + 1] if step + 1 < len(levels) else 0.0
    last = step == len(levels) - 1
    if mode == "discrete" or (mode == "semi-continuous" and not last):
        return (masks > n_k).to(masks.dtype)
    return torch.clamp((masks - n_next) / max(n_k - n_next, 1e-8), 0.0, 1.0)


def suppress_leaks(mask: torch.Tensor, x0: torch.Tensor, background: torch.Tensor, sensitivity: float) -> torch.Tensor:
    """m ← m·(2·sigmoid(leak / s) − 1), leak = mean over channels of (x0 − background)²: where a region's
    prediction is still the plain background, its mask falls to 0."""
    leak = (x0 - background).pow(2).mean(dim=1, keepdim=True)
    return mask * (2.0 * torch.sigmoid(leak / sensitivity) - 1.0)


def pre_average(x0: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """[1, C, h, w] = Σ m_j x0_j / Σ m_j over the rows; row 0 (the background) fills where Σ m < 1."""
    total = masks.sum(dim=0, keepdim=True)
    mixed = (masks * x0).sum(dim=0, keepdim=True) / torch.clamp(total, min=1e-8)  # 0 where total is 0: filled next
    fill = torch.clamp(1.0 - total, 0.0, 1.0)
    return (1.0 - fill) * mixed + fill * x0[:1]


def centring_shift(mask: torch.Tensor) -> tuple[int, int]:
    """(dy, dx) that moves the centre of a [1, h, w] mask's box to the centre of the grid."""
    rows = torch.nonzero(mask[0].any(dim=1)).flatten()
    cols = torch.nonzero(mask[0].any(dim=0)).flatten()
    if not len(rows):
        return 0, 0
    h, w = mask.shape[-2:]
    cy = (int(rows[0]) + int(rows[-1]) + 1) / 2
    cx = (int(cols[0]) + int(cols[-1]) + 1) / 2
    return round(h / 2 - cy), round(w / 2 - cx)


# --- the scheduler wrapper ----------------------------------------------------------------------------------


@dataclass
class StepRecord:
    """What one step did (kept for inspection: tests, debugging)."""

    step: int
    quantized: torch.Tensor
    masks: torch.Tensor
    bootstrapped: bool
    inputs: torch.Tensor
    x0: torch.Tensor
    blended: torch.Tensor


class RegionScheduler:
    """The pipeline's scheduler with the region blend around the UNet (see the module doc). Every other
    attribute is the wrapped scheduler's."""

    def __init__(
        self,
        inner: Any,
        masks: torch.Tensor,
        settings: RegionSamplerSettings,
        white: torch.Tensor,
        noise: torch.Tensor,
        record: bool = False,
    ) -> None:
        self.inner = inner
        self.masks = masks.to(device=white.device, dtype=torch.float32)
        self.settings = settings
        self.white = white.float()
        self.noise = noise.float()
        self.regions = masks.shape[0]
        self.shifts = [(0, 0)] + [centring_shift(m > 0) for m in self.masks[1:]]
        self.records: list[StepRecord] | None = [] if record else None
        self.levels: list[float] = []
        self._step = 0
        self._inputs: torch.Tensor | None = None
        self._previous_x0: torch.Tensor | None = None
        self.sigma_space = float(inner.init_noise_sigma) > 1.0
        self.prediction = inner.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction", "sample") or (
            self.sigma_space and self.prediction != "epsilon"
        ):
            raise DrawError(f"sampler='regions' cannot use {type(inner).__name__} with {self.prediction} prediction")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    # the pipeline's calls ----------------------------------------------------------------------------------

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        self.inner.set_timesteps(*args, **kwargs)
        steps = len(self.inner.timesteps)
        if getattr(self.inner, "order", 1) != 1 or (args and isinstance(args[0], int) and steps != args[0]):
            name = type(self.inner).__name__
            raise DrawError(f"sampler='regions' needs a scheduler with one call per step; {name} is not")
        self.levels = [noise_level(*self.coefficients(k)) for k in range(steps)]
        self._step = 0
        self._previous_x0 = None

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        groups = sample.shape[0] // self.regions
        self._inputs = self.region_inputs(sample[:1].float(), self._step).to(sample.dtype)
        return self.inner.scale_model_input(torch.cat([self._inputs] * groups), timestep)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        k = self._step
        a, b = self.coefficients(k)
        inputs = self._inputs if self._inputs is not None else sample
        x0 = self.unroll(self.to_x0(inputs.float(), model_output.float(), a, b))
        masks = quantized = quantize(self.masks, self.levels, k, self.settings.quantize)
        bootstrapping = self.bootstrapping(k)
        if bootstrapping:
            background = self.bootstrap_background(k)
            suppressed = [
                suppress_leaks(masks[j : j + 1], x0[j : j + 1], background, self.settings.leak_sensitivity)
                for j in range(1, self.regions)
            ]
            masks = torch.cat([masks[:1], *suppressed])
        blended = pre_average(x0, masks)
        shared = sample[:1].float()
        implied = self.from_x0(shared, blended, a, b)
        accepted = set(inspect.signature(self.inner.step).parameters)
        extra = {name: value for name, value in (("eta", eta), ("generator", generator)) if name in accepted}
        result = self.inner.step(implied.to(sample.dtype), timestep, sample[:1], **extra, **kwargs, return_dict=False)
        following = result[0].expand(self.regions, *result[0].shape[1:]).clone()
        if self.records is not None:
            record = StepRecord(k, quantized, masks.clone(), bootstrapping, inputs.clone(), x0.clone(), blended.clone())
            self.records.append(record)
        self._previous_x0 = blended
        self._step += 1
        self._inputs = None
        return (following,) if not return_dict else _Output(following)

    # the blend ---------------------------------------------------------------------------------------------

    def coefficients(self, k: int) -> tuple[float, float]:
        """(a, b) of step k's latent a·x0 + b·ε, read from the scheduler's own schedule."""
        inner = self.inner
        if self.sigma_space:
            return 1.0, float(inner.sigmas[k])
        sigmas = getattr(inner, "sigmas", None)
        if sigmas is not None and len(sigmas) > k:
            sigma = float(sigmas[k])
            alpha = 1.0 / math.sqrt(1.0 + sigma * sigma)
            return alpha, sigma * alpha
        alpha_bar = float(inner.alphas_cumprod[int(inner.timesteps[k])])
        return math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)

    def to_x0(self, x: torch.Tensor, output: torch.Tensor, a: float, b: float) -> torch.Tensor:
        if self.prediction == "epsilon":
            return (x - b * output) / a
        if self.prediction == "v_prediction":
            return a * x - b * output
        return output

    def from_x0(self, x: torch.Tensor, x0: torch.Tensor, a: float, b: float) -> torch.Tensor:
        """The model output that, for latent x, predicts x0."""
        if self.prediction == "sample":
            return x0
        epsilon = (x - a * x0) / max(b, 1e-8)
        return epsilon if self.prediction == "epsilon" else a * epsilon - b * x0

    def bootstrapping(self, k: int) -> bool:
        return k < self.settings.bootstrap_steps

    def bootstrap_background(self, k: int) -> torch.Tensor:
        """White, fading into the previous blended estimate after `bootstrap_mix_steps`."""
        mix = min(max(self.settings.bootstrap_mix_steps - k, 0.0), 1.0)
        if self._previous_x0 is None or mix >= 1.0:
            return self.white
        return mix * self.white + (1.0 - mix) * self._previous_x0

    def region_inputs(self, shared: torch.Tensor, k: int) -> torch.Tensor:
        """[regions, C, h, w] UNet inputs of step k: the shared latent, bootstrapped and centred for the items."""
        rows = shared.expand(self.regions, *shared.shape[1:]).clone()
        if not self.bootstrapping(k):
            return rows
        a, b = self.coefficients(k)
        background = a * self.bootstrap_background(k) + b * self.noise
        masks = quantize(self.masks, self.levels, k, self.settings.quantize)
        for j in range(1, self.regions):
            row = (1.0 - masks[j]) * background[0] + masks[j] * shared[0]
            rows[j] = torch.roll(row, self.shifts[j], dims=(-2, -1)) if self.settings.centre else row
        return rows

    def unroll(self, x0: torch.Tensor) -> torch.Tensor:
        if not (self.bootstrapping(self._step) and self.settings.centre):
            return x0
        out = x0.clone()
        for j in range(1, self.regions):
            dy, dx = self.shifts[j]
            out[j] = torch.roll(x0[j], (-dy, -dx), dims=(-2, -1))
        return out


@dataclass
class _Output:
    prev_sample: torch.Tensor


# --- the render -----------------------------------------------------------------------------------------------


def region_prompts(plan: TurnPlan, scene: str) -> tuple[list[str], list[str]]:
    """Region rows: the background (the plan's background prompt, else the scene prompt), then each item."""
    negative = plan.negative_prompt
    prompts = [plan.background or scene, *(item.phrase for item in plan.items)]
    negatives = [negative, *(item.negative if item.negative is not None else negative for item in plan.items)]
    return prompts, negatives


def lerp_text(text: TextRows, strengths: list[float]) -> TextRows:
    """Prompt strength on every embedding of a region row (sequence, negative, pooled): lerp from row 0."""

    def lerp(rows: torch.Tensor | None) -> torch.Tensor | None:
        if rows is None:
            return None
        out = rows.clone()
        for j, strength in enumerate(strengths, start=1):
            if strength != 1.0:
                out[j] = torch.lerp(rows[0], rows[j], strength)
        return out

    return TextRows(
        embeds=lerp(text.embeds),  # type: ignore[arg-type]
        negative=lerp(text.negative),  # type: ignore[arg-type]
        pooled=lerp(text.pooled),
        negative_pooled=lerp(text.negative_pooled),
    )


def region_batch(pipe: DiffusionPipeline, main: RenderBatch, plan: TurnPlan, scene: str) -> RenderBatch:
    """The main batch recast for the region sampler: one row per region, each with its own prompt and (with
    `subject_reference`) its subject's reference rows over the whole canvas; no Parallel-UNet text rows."""
    prompts, negatives = region_prompts(plan, scene)
    text = lerp_text(encode_texts(pipe, prompts, negatives), [item.prompt_strength for item in plan.items])
    use_refs = "subject_reference" in main.mechanisms and main.references is not None
    canvas = Box(x=0, y=0, w=plan.width, h=plan.height)
    images = [RegionImage(boxes=[], background_row=0, subject_rows=[], reference_index=[])]
    for index in main.images[0].reference_index:
        ref = index if use_refs else None
        images.append(
            RegionImage(
                boxes=[canvas] if ref is not None else [],
                background_row=0,
                subject_rows=[0] if ref is not None else [],
                reference_index=[ref] if ref is not None else [],
            )
        )
    rows = len(images)
    return replace(
        main,
        images=images,
        prompts=text,
        region_text=text.embeds,
        latents=main.latents.expand(rows, *main.latents.shape[1:]).contiguous(),
        refine_step=None,
        mechanisms=("subject_reference",) if use_refs else (),
        shared=None,
        global_frames=None,
    )


@torch.no_grad()
def decode_latents(pipe: DiffusionPipeline, latents: torch.Tensor) -> Image.Image:
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))
    dtype = torch.float32 if upcast else vae.dtype
    if upcast:
        vae.to(dtype=torch.float32)
    try:
        pixels = vae.decode(latents.to(dtype) / vae.config.scaling_factor, return_dict=False)[0]
    finally:
        if upcast:
            vae.to(dtype=torch.float16)
    return pipe.image_processor.postprocess(pixels, output_type="pil")[0]


def render_regions(
    pipe: DiffusionPipeline,
    main: RenderBatch,
    plan: TurnPlan,
    settings: DrawSettings,
    progress: Progress,
    scene: str = "",
    records: list[StepRecord] | None = None,
) -> Image.Image:
    """Draw the turn with the region sampler (`main`: the turn's main batch, whose latents, references, hooks
    and guidance it keeps). `records`, when given, receives what every step did."""
    batch = region_batch(pipe, main, plan, scene)
    factor = int(pipe.vae_scale_factor)
    masks = region_masks(plan, factor, settings.regions.cover_alpha)
    white = vae_encode(pipe, Image.new("RGB", (plan.width, plan.height), (255, 255, 255))).float()
    original = pipe.scheduler
    noise = main.latents[:1].float()
    wrapper = RegionScheduler(original, masks, settings.regions, white, noise, record=records is not None)
    pipe.scheduler = wrapper
    try:
        latents = render(pipe, batch, progress, output_type="latent")
    finally:
        pipe.scheduler = original
    if records is not None and wrapper.records is not None:
        records.extend(wrapper.records)
    return decode_latents(pipe, latents[:1])
