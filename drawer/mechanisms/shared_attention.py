"""ConsiStory's subject-driven shared self-attention (`shared_attention`), re-implemented from the paper facts
in the design notes (seed-mechanisms.md §4), plus a per-subject anchor cache for multi-turn use.

- Subject masks: every cross-attention layer at the record level (the grid at 1/4 of the latent side, SDXL's
  32×32 at 1024², SD1.5's 16×16 at 512²) records the conditional half's attention probabilities, averaged over
  heads and layers; after each step the last `window` steps are averaged, each subject token's map is
  thresholded with Otsu, and the tokens of a subject are OR-ed. Masks of step i serve step i+1 (none at step 0,
  where attention is stock).
- Mask dropout: each subject patch of an anchor is dropped with probability `mask_dropout` (seeded per render).
- Shared self-attention, up blocks only: image i's queries attend to its own keys plus the (kept) subject patches
  of every anchor j ≠ i, the unconditional and conditional halves separately.
- Vanilla blending over the first `vanilla_query_steps` of steps: the shared output is blended with the image's
  own (vanilla) self-attention output with weight 0.9 → 0.82. Deviation: the paper blends the *queries* of an
  extra vanilla UNet pass; we blend outputs of the same pass (no extra forward, docs/mechanisms.md).
- Optional DIFT-style feature injection among the batch's anchors (`SharedSetup.feature_injection`, off by
  default): drawer.mechanisms.feature_injection; the context only carries its injector.
- Anchor cache (multi-turn): a render may record, per subject, the self-attention inputs of its subject patches
  at every up-block layer and step (CPU, the UNet's dtype); a later render attends to them from inside the
  subject's box (keys/values recomputed with the layer's own projections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from drawer.layout_masks import Grid, box_coverage
from drawer.mechanisms.anchor_cache import (  # the cache's home; the others are re-exported from here
    AnchorCache,
    AnchorStore,  # noqa: F401
    reference_hash,  # noqa: F401
    safe_open_bytes,  # noqa: F401
    usable_cache,  # noqa: F401
)
from studio.geometry import Box

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

    from drawer.mechanisms import AttentionStack
    from drawer.mechanisms.feature_injection import FeatureInjector
    from drawer.render import RenderBatch

KWARG = "shared_attention"
RECORD_LEVEL = 2
"""Index of the record grid among the UNet's attention grids: 1/4 of the latent side."""
MASK_WINDOW = 0.4
"""Fraction of the steps whose cross-attention maps are averaged (ConsiStory: the last 20 of 50)."""
BLEND_START, BLEND_END = 0.9, 0.81836735


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D tensor: the cut maximizing the between-class variance of its histogram."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return high
    hist = torch.histc(values.double(), bins=bins, min=low, max=high)
    centers = torch.linspace(low, high, bins + 1, dtype=torch.float64)
    centers = (centers[:-1] + centers[1:]) / 2
    weight0 = torch.cumsum(hist, 0)
    weight1 = weight0[-1] - weight0
    mean0 = torch.cumsum(hist * centers, 0) / weight0.clamp(min=1e-12)
    mean1 = ((hist * centers).sum() - torch.cumsum(hist * centers, 0)) / weight1.clamp(min=1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(centers[int(torch.argmax(between[:-1]))])


def subject_mask(maps: torch.Tensor, tokens: list[int]) -> torch.Tensor:
    """OR over `tokens` of each token's Otsu-thresholded map; maps [L, T] → bool [L]."""
    mask = torch.zeros(maps.shape[0], dtype=torch.bool)
    for token in tokens:
        column = maps[:, token].float().cpu()
        mask |= column > otsu_threshold(column)
    return mask


def _resize_mask(mask: torch.Tensor, source: Grid, target: Grid) -> torch.Tensor:
    grid = mask.float().view(1, 1, source.height, source.width)
    return F.interpolate(grid, size=(target.height, target.width), mode="bilinear").flatten() > 0.5


@dataclass
class SharedSetup:
    """What a render asks of shared attention: the subject tokens of each image (in its global prompt row), the
    anchors among the batch, the cached anchors to attend to inside their boxes, and which subjects to record."""

    subject_tokens: list[dict[str, list[int]]]
    anchors: list[int]
    mask_dropout: float
    vanilla_query_steps: float
    cached: list[tuple[AnchorCache, int, Box]] = field(default_factory=list)
    """(cache, image index, box) triples: image's queries in box attend to the cache."""
    record: dict[str, tuple[int, Box, str]] = field(default_factory=dict)
    """subject id → (image index, box, reference hash) to record an anchor cache from."""
    recorded: dict[str, AnchorCache] = field(default_factory=dict)
    """Filled by the render: the anchor caches recorded for `record`."""
    feature_injection: bool = False
    """DIFT-style feature injection among the batch's anchors (drawer.mechanisms.feature_injection)."""
    correspondence: object | None = None
    """Filled by the injection pre-pass: the dense correspondence to the anchors (feature_injection.Correspondence)."""


class SharedAttentionContext:
    """The per-render state the processors read (cross-attention recording, up-block self-attention)."""

    def __init__(
        self,
        setup: SharedSetup,
        grids: list[Grid],
        layer_names: dict[int, str],
        *,
        size: tuple[int, int],
        steps: int,
        guided: bool,
        seed: int,
    ) -> None:
        self.setup = setup
        self.height, self.width = size
        self.images = len(setup.subject_tokens)
        self.grids = {grid.tokens: grid for grid in grids}
        self.record_grid = grids[min(RECORD_LEVEL, len(grids) - 1)]
        self.layer_names = layer_names
        self.steps = steps
        self.guided = guided
        self.step = 0
        self.window = max(1, round(MASK_WINDOW * steps))
        self.generator = torch.Generator().manual_seed(seed)
        self._step_maps: torch.Tensor | None = None
        self._step_count = 0
        self._history: list[torch.Tensor] = []
        self.subject_masks: list[dict[str, torch.Tensor]] | None = None
        """Per image, subject id → bool mask at the record grid (no dropout)."""
        self.kept: dict[int, torch.Tensor] = {}
        """Token count → [images, tokens] bool: anchor subject patches after dropout (the shared keys)."""
        self.kept_index: dict[int, list[torch.Tensor]] = {}
        self.box_masks: dict[int, list[tuple[AnchorCache, int, torch.Tensor]]] = {}
        self.recorded = setup.recorded
        self.cache_reads = 0
        self.injection: FeatureInjector | None = None
        """DIFT-style feature injection (drawer.mechanisms.feature_injection), set when the setup asks for it."""
        for cache, image, box in setup.cached:
            for grid in grids:
                inside = self._inside(box, grid)
                self.box_masks.setdefault(grid.tokens, []).append((cache, image, inside))

    # --- masks -------------------------------------------------------------------------------------------

    def record_cross_attention(
        self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: object
    ) -> None:
        if hidden_states.ndim != 3 or hidden_states.shape[1] != self.record_grid.tokens:
            return
        text = encoder_hidden_states[0] if isinstance(encoder_hidden_states, tuple) else encoder_hidden_states
        assert isinstance(text, torch.Tensor)
        half = slice(self.images, 2 * self.images) if self.guided else slice(0, self.images)
        query = attn.to_q(hidden_states[half])
        context = attn.norm_encoder_hidden_states(text[half]) if attn.norm_cross else text[half]
        key = attn.to_k(context)
        heads = attn.heads
        rows, length, inner = query.shape
        query = query.view(rows, length, heads, inner // heads).transpose(1, 2)
        key = key.view(rows, -1, heads, inner // heads).transpose(1, 2)
        probs = torch.softmax(query @ key.transpose(-1, -2) * (inner // heads) ** -0.5, dim=-1).mean(dim=1)
        probs = probs.float().cpu()
        self._step_maps = probs if self._step_maps is None else self._step_maps + probs
        self._step_count += 1

    def after_step(self, finished_step: int) -> None:
        """Listener: average the recorded maps, threshold them into subject masks, draw the dropout."""
        self.step = finished_step + 1
        if self._step_maps is None:
            return
        self._history = [*self._history, self._step_maps / self._step_count][-self.window :]
        self._step_maps, self._step_count = None, 0
        maps = torch.stack(self._history).mean(dim=0)
        self.subject_masks = [
            {sid: subject_mask(maps[i], tokens) for sid, tokens in self.setup.subject_tokens[i].items()}
            for i in range(self.images)
        ]
        self.kept = {}
        for tokens, grid in self.grids.items():
            union = torch.stack([self._union(i, grid) for i in range(self.images)])
            keep = torch.rand(union.shape, generator=self.generator) >= self.setup.mask_dropout
            self.kept[tokens] = union & keep
        self.index_kept()

    def index_kept(self, device: torch.device | None = None) -> None:
        """The kept patches as index tensors per image (what the self-attention gathers)."""
        self.kept_index = {
            tokens: [torch.nonzero(row).flatten().to(device or "cpu") for row in kept]
            for tokens, kept in self.kept.items()
        }

    def union_mask(self, image: int, grid: Grid) -> torch.Tensor:
        """The image's subject patches (every subject, no dropout) at `grid`."""
        return self._union(image, grid)

    def _union(self, image: int, grid: Grid) -> torch.Tensor:
        assert self.subject_masks is not None
        union = torch.zeros(self.record_grid.tokens, dtype=torch.bool)
        for mask in self.subject_masks[image].values():
            union |= mask
        return _resize_mask(union, self.record_grid, grid)

    def subject_patches(self, image: int, subject_id: str, grid: Grid, box: Box) -> torch.Tensor:
        assert self.subject_masks is not None
        mask = _resize_mask(self.subject_masks[image][subject_id], self.record_grid, grid)
        return mask & self._inside(box, grid)

    def _inside(self, box: Box, grid: Grid) -> torch.Tensor:
        return box_coverage(box, grid, self.height, self.width).flatten() > 0.5

    # --- shared self-attention ---------------------------------------------------------------------------

    def blend_weight(self) -> float:
        blended = round(self.setup.vanilla_query_steps * self.steps)
        if self.step >= blended:
            return 0.0
        return BLEND_START + (BLEND_END - BLEND_START) * self.step / max(blended - 1, 1)

    def self_attention(self, attn: Attention, hidden_states: torch.Tensor, temb: torch.Tensor | None) -> torch.Tensor:
        rows, length, _ = hidden_states.shape
        layer = self.layer_names.get(id(attn), "")
        self._record_anchor_patches(layer, hidden_states, length)
        query, key, value = (_heads(proj(hidden_states), attn.heads) for proj in (attn.to_q, attn.to_k, attn.to_v))
        weight = self.blend_weight()
        shared_rows, shared = self._shared_attention(query, key, value, length)
        if shared_rows is not None and len(shared_rows) == rows and weight == 0:
            out = torch.empty_like(shared).index_copy_(0, shared_rows, shared)
            own = out
        else:
            own = F.scaled_dot_product_attention(query, key, value)
            out = own if shared_rows is None else own.index_copy(0, shared_rows, shared)
        for cache, image, inside in self.box_masks.get(length, []):
            patches = cache.at(self.step, self.steps, layer)
            if patches is None or self.step == 0:
                continue
            self.cache_reads += 1
            out = self._attend_cached(attn, query, key, value, out, patches, image, inside)
        if weight > 0:
            out = weight * own + (1 - weight) * out
        out = out.transpose(1, 2).reshape(rows, length, -1).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if self.injection is not None:
            out = self.injection.inject(layer, self.step, out)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _shared_attention(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, length: int
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Shared rows (queries attending to their own keys plus the kept subject patches of the other
        anchors), batched: one 4-D SDPA call per set of anchors attended to, both halves together. Returns the
        rows' indices and their outputs [R, heads, L, d] (None: no row shares)."""
        kept = self.kept_index.get(length) if self.setup.anchors else None
        if kept is None:
            return None, query
        if kept and kept[0].device != key.device:
            kept = self.kept_index[length] = [index.to(key.device) for index in kept]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in range(self.images):
            others = tuple(j for j in self.setup.anchors if j != i)
            if others:
                groups.setdefault(others, []).append(i)
        if not groups:
            return None, query
        halves = 2 if self.guided else 1
        all_rows, outputs = [], []
        for others, images in groups.items():
            rows = [half * self.images + i for half in range(halves) for i in images]
            row_index = torch.tensor(rows, device=key.device)
            keys, values = [key.index_select(0, row_index)], [value.index_select(0, row_index)]
            for j in others:
                anchor_rows = torch.tensor([(r // self.images) * self.images + j for r in rows], device=key.device)
                keys.append(key.index_select(0, anchor_rows).index_select(2, kept[j]))
                values.append(value.index_select(0, anchor_rows).index_select(2, kept[j]))
            outputs.append(
                F.scaled_dot_product_attention(
                    query.index_select(0, row_index), torch.cat(keys, 2), torch.cat(values, 2)
                )
            )
            all_rows.extend(rows)
        return torch.tensor(all_rows, device=key.device), torch.cat(outputs)

    def _attend_cached(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        out: torch.Tensor,
        patches: torch.Tensor,
        image: int,
        inside: torch.Tensor,
    ) -> torch.Tensor:
        """The image's queries inside the cached subject's box attend to their own keys plus the cached anchor
        patches (keys/values from the layer's projections), both halves in one call."""
        patches = patches.to(device=key.device, dtype=key.dtype)
        halves = 2 if self.guided else 1
        if patches.shape[0] != halves:  # a cache recorded with the other guidance: its conditional half serves
            patches = patches[-1:].expand(halves, -1, -1)
        rows = torch.tensor([half * self.images + image for half in range(halves)], device=key.device)
        extra_key, extra_value = _heads(attn.to_k(patches), attn.heads), _heads(attn.to_v(patches), attn.heads)
        shared = F.scaled_dot_product_attention(
            query.index_select(0, rows),
            torch.cat([key.index_select(0, rows), extra_key], 2),
            torch.cat([value.index_select(0, rows), extra_value], 2),
        )
        inside = inside.to(out.device)
        mixed = torch.where(inside.view(1, 1, -1, 1), shared, out.index_select(0, rows))
        return out.index_copy(0, rows, mixed)

    def inject(self, attn: Attention, out: torch.Tensor) -> torch.Tensor:
        """Feature injection into a self-attention output (after `to_out`) outside the up blocks."""
        if self.injection is None:
            return out
        return self.injection.inject(self.layer_names.get(id(attn), ""), self.step, out)

    def _record_anchor_patches(self, layer: str, hidden_states: torch.Tensor, length: int) -> None:
        if not self.setup.record or self.subject_masks is None or length not in self.grids:
            return
        grid = self.grids[length]
        halves = 2 if self.guided else 1
        for subject_id, (image, box, ref_hash) in self.setup.record.items():
            if subject_id not in self.subject_masks[image]:
                continue
            cache = self.recorded.get(subject_id)
            if cache is None:
                cache = AnchorCache(subject_id, ref_hash, self.steps, box.area)
                self.recorded[subject_id] = cache
            patches = self.subject_patches(image, subject_id, grid, box).to(hidden_states.device)
            rows = [hidden_states[h * self.images + image][patches] for h in range(halves)]
            cache.patches[(self.step, layer)] = torch.stack(rows).detach().to("cpu")


def _heads(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    rows, length, inner = tensor.shape
    return tensor.view(rows, length, heads, inner // heads).transpose(1, 2)


FUNCTION_WORDS = frozenset({"a", "an", "the", "with", "of", "and", "in", "on", "at", "his", "her", "its"})
"""Words that name no subject: their tokens would pull every article of the prompt into the mask."""


def prompt_token_positions(pipe: DiffusionPipeline, prompt: str, words: str) -> list[int]:
    """Positions (in the encoded prompt, start token included) of the tokens of `words` inside `prompt`."""
    tokenizer = pipe.tokenizer
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    content = " ".join(word for word in words.lower().split() if word not in FUNCTION_WORDS)
    wanted = set(tokenizer(content, add_special_tokens=False).input_ids)
    return [i for i, token in enumerate(ids) if token in wanted]


def install(pipe: DiffusionPipeline, batch: RenderBatch, stack: AttentionStack) -> None:
    if "shared_attention" not in batch.mechanisms or batch.shared is None:
        return
    from drawer.parallel_attention import unet_grids

    assert isinstance(batch.shared, SharedSetup)
    unet = pipe.unet
    names = {id(module): name for name, module in unet.named_modules() if isinstance(module, Attention)}
    grids = unet_grids(unet, batch.height, batch.width, int(pipe.vae_scale_factor))
    context = SharedAttentionContext(
        batch.shared,
        grids,
        names,
        size=(batch.height, batch.width),
        steps=batch.steps,
        guided=batch.guidance_scale > 1.0,
        seed=batch.seed,
    )
    if batch.shared.feature_injection:
        from drawer.mechanisms.feature_injection import injector

        context.injection = injector(batch.shared, grids, context.guided, batch.steps)
    stack.kwargs[KWARG] = context
    stack.listeners.append(context.after_step)
    stack.installed.append("shared_attention")
