"""The per-render state of MS-Diffusion's image branch: image tokens, subject masks per attention resolution,
per-subject scales, and the auto layout (masks from the phrases' cross-attention maps after `start_step`).

Built once per render (drawer.msdiffusion.install), passed to every `attn2` as the `msdiffusion` keyword, and
told the step index by the callback chain (`after_step`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import Attention

from drawer.layout_masks import Grid

MASKED = -10000.0
"""The logit bias of a token a pixel may not attend to (the published value)."""

SubjectActive = Callable[[int, int], bool]
"""(step, subject index) → whether the subject's image tokens condition that step."""
Observer = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""(layer id, masks [n, L], probabilities [images, heads, L, tokens], image output [images, L, inner])."""


def box_masks(boxes: list[tuple[float, float, float, float]], grid: Grid) -> torch.Tensor:
    """[n, grid tokens] 0/1 masks of normalised xyxy boxes on a grid: a box covers the cells from
    floor(x0·w) to ceil(x1·w) (and the same in y), the published quantisation, per side of any canvas."""
    masks = torch.zeros(len(boxes), grid.height, grid.width)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        c0, c1 = math.floor(x0 * grid.width), math.ceil(x1 * grid.width)
        r0, r1 = math.floor(y0 * grid.height), math.ceil(y1 * grid.height)
        masks[i, max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = 1.0
    return masks.reshape(len(boxes), grid.tokens)


def minmax_normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each row of [n, L] scaled to [0, 1] (the published 1e-5 guard against a flat map)."""
    low = maps.min(dim=-1, keepdim=True).values
    high = maps.max(dim=-1, keepdim=True).values
    return (maps - low) / (high - low + 1e-5)


@dataclass
class _TextMaps:
    total: torch.Tensor
    count: int = 0


class MSDiffusionContext:
    """Everything the image branch needs for one render of `images` pictures (batch rows: the conditional
    half when `guided`), on the UNet's device and dtype."""

    def __init__(
        self,
        tokens: torch.Tensor,
        *,
        num_dummy: int,
        num_queries: int,
        boxes: list[tuple[float, float, float, float]],
        grids: list[Grid],
        scale: float = 0.6,
        subject_scales: list[float] | None = None,
        subject_active: SubjectActive | None = None,
        mask_threshold: float | None = None,
        start_step: int = 5,
        phrase_tokens: list[list[int]] | None = None,
        images: int = 1,
        token_counts: list[int] | None = None,
    ) -> None:
        n = len(boxes)
        counts = list(token_counts) if token_counts is not None else [num_queries] * n
        if len(counts) != n:
            raise ValueError(f"{len(counts)} token counts for {n} subjects")
        if tokens.shape[0] != num_dummy + sum(counts):
            raise ValueError(f"{tokens.shape[0]} image tokens for {num_dummy} dummies + subjects of {counts} tokens")
        if subject_scales is not None and len(subject_scales) != n:
            raise ValueError(f"{len(subject_scales)} subject scales for {n} subjects")
        self.tokens = tokens
        self.num_dummy = num_dummy
        self.num_queries = num_queries
        self.token_counts = counts
        """Image tokens per subject: num_queries, or k × num_queries for k references combined as `tokens`."""
        self.boxes = boxes
        self.images = images
        self.scale = scale
        self.subject_scales: list[float] = list(subject_scales) if subject_scales is not None else [scale] * n
        """Per-subject strength of the image branch (the published `subject_scales`; default `scale` each)."""
        self.subject_active: SubjectActive | None = subject_active
        """Hook: is subject i's image conditioning on at step s? None: always (reference controls fill it)."""
        self.mask_threshold = mask_threshold
        self.start_step = start_step
        self.phrase_tokens = phrase_tokens or [[] for _ in range(n)]
        self.observer: Observer | None = None
        self.step = 0
        self._grids = {grid.tokens: grid for grid in grids}
        self._box_masks: dict[int, torch.Tensor] = {}
        self._kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._text_maps: dict[int, _TextMaps] = {}
        self.column_scale = self._column_scale(0)

    @property
    def subjects(self) -> int:
        return len(self.boxes)

    @property
    def auto_layout(self) -> bool:
        return self.mask_threshold is not None

    @property
    def records_text_maps(self) -> bool:
        return self.auto_layout

    @property
    def uses_attention_masks(self) -> bool:
        """From `start_step` on (with auto layout), masks come from the phrases' cross-attention maps."""
        return self.auto_layout and self.step >= self.start_step

    def _column_scale(self, step: int) -> torch.Tensor:
        scales = [
            s if self.subject_active is None or self.subject_active(step, i) else 0.0
            for i, s in enumerate(self.subject_scales)
        ]
        columns = [1.0] * self.num_dummy + [s for s, c in zip(scales, self.token_counts, strict=True) for _ in range(c)]
        return torch.tensor(columns, device=self.tokens.device, dtype=torch.float32)

    def after_step(self, finished_step: int) -> None:
        """Step listener: the next step's index and its per-subject column scales."""
        self.step = finished_step + 1
        self.column_scale = self._column_scale(self.step)

    def image_kv(self, processor: torch.nn.Module, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's keys and values of the image tokens, projected once per render."""
        cached = self._kv.get(id(attn))
        if cached is None:
            tokens = self.tokens.to(processor.to_k_ms.weight.dtype)
            cached = (processor.to_k_ms(tokens), processor.to_v_ms(tokens))
            self._kv[id(attn)] = cached
        return cached

    def grid(self, length: int) -> Grid:
        try:
            return self._grids[length]
        except KeyError:
            raise RuntimeError(f"no grid of {length} tokens (known: {sorted(self._grids)})") from None

    def box_masks(self, length: int) -> torch.Tensor:
        masks = self._box_masks.get(length)
        if masks is None:
            masks = box_masks(self.boxes, self.grid(length)).to(self.tokens.device)
            self._box_masks[length] = masks
        return masks

    def masks(self, layer: int, length: int) -> torch.Tensor:
        """[n, L] 0/1 subject masks of this layer at the current step: the boxes, or (auto layout, from
        `start_step` on) the thresholded mean of the layer's recorded phrase attention maps. A subject whose
        phrase has no token in the prompt keeps its box."""
        boxes = self.box_masks(length)
        maps = self._text_maps.get(layer)
        if not self.uses_attention_masks or maps is None or maps.count == 0:
            return boxes
        assert self.mask_threshold is not None
        attention = (minmax_normalise(maps.total / maps.count) > self.mask_threshold).to(boxes.dtype)
        has_phrase = torch.tensor([bool(t) for t in self.phrase_tokens], device=boxes.device)[:, None]
        return torch.where(has_phrase, attention, boxes)

    def record_text_map(self, layer: int, probs: torch.Tensor, length: int) -> None:
        """Add this step's per-phrase attention map (mean over heads, phrase tokens and images) of one layer."""
        rows = []
        for positions in self.phrase_tokens:
            if positions:
                rows.append(probs[..., positions].mean(dim=(0, 1, 3)))
            else:
                rows.append(torch.zeros(length, device=probs.device, dtype=probs.dtype))
        current = torch.stack(rows).float()
        maps = self._text_maps.get(layer)
        if maps is None:
            self._text_maps[layer] = _TextMaps(total=current, count=1)
        else:
            maps.total = maps.total + current
            maps.count += 1

    @staticmethod
    def background(masks: torch.Tensor) -> torch.Tensor:
        """[L] 1 where no subject mask covers the pixel."""
        return torch.clamp(1.0 - masks.sum(dim=0), min=0.0)

    def bias(self, masks: torch.Tensor) -> torch.Tensor:
        """[L, tokens] logit bias: dummies allowed on the background only, subject i's tokens inside mask i."""
        background = self.background(masks)
        allowed = torch.cat(
            [background[:, None].expand(-1, self.num_dummy), masks.t().repeat_interleave(self._repeats(masks), dim=1)],
            dim=1,
        )
        return (1.0 - allowed) * MASKED

    def _repeats(self, masks: torch.Tensor) -> torch.Tensor | int:
        counts = self.token_counts
        if all(c == self.num_queries for c in counts):
            return self.num_queries
        return torch.tensor(counts, device=masks.device)

    def observe(self, layer: int, masks: torch.Tensor, probs: torch.Tensor, out: torch.Tensor) -> None:
        if self.observer is not None:
            self.observer(layer, masks, probs, out)
