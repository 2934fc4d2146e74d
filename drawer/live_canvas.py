"""Live canvas (docs/fast_mode.md): while a draw runs with `settings.live_canvas`, text encodings and reference
tokens come from an LRU cache on the drawer, so re-drawing after a prompt, box or mask edit encodes only what
changed and the edit costs one (fast) generation.

Text rows are cached one (prompt, negative) pair at a time: an edit of one subject's phrase re-encodes that row
only (the missing rows of a call are encoded together in one encoder call). Reference images are cached as the
whole list of a call, keyed by their pixels. Region weights are cached one plan item at a time (`region_key`:
the canvas size, the item's box, its mask, mask_std and mask_strength): its soft canvas weights, and its
coverage of every attention grid, so an edit that moves one box recomputes that item's weights only. The cache
is switched on for the current thread (a ContextVar) by `EncodingCache.use()`; `drawer.conditioning` consults it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

    from drawer.conditioning import ReferenceEmbeds, TextRows
    from drawer.layout_masks import Grid
    from studio.geometry import Box
    from studio.plan import PlanItem

_ACTIVE: ContextVar[EncodingCache | None] = ContextVar("studio_live_canvas", default=None)


def active_cache() -> EncodingCache | None:
    return _ACTIVE.get()


class EncodingCache:
    """LRU caches of text rows and reference embeddings for one pipeline."""

    def __init__(self, max_rows: int = 256, max_references: int = 16, max_regions: int = 64) -> None:
        self.max_rows = max_rows
        self.max_references = max_references
        self.max_regions = max_regions
        self._rows: OrderedDict[tuple[str, str], tuple[torch.Tensor, ...]] = OrderedDict()
        self._references: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self._canvas: OrderedDict[Hashable, torch.Tensor | None] = OrderedDict()
        self._coverage: OrderedDict[Hashable, list[torch.Tensor]] = OrderedDict()
        self.text_calls = 0
        """Encoder calls made through the cache (for tests and benches)."""
        self.reference_calls = 0
        self.canvas_calls = 0
        """Items whose canvas weights (raster, feather, strength) were computed through the cache."""
        self.coverage_calls = 0
        """Items whose per-level coverage (all attention grids of a draw) was computed through the cache."""

    @contextmanager
    def use(self) -> Iterator[EncodingCache]:
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def texts(
        self,
        pipe: DiffusionPipeline,
        prompts: list[str],
        negatives: list[str],
        encode: Callable[[DiffusionPipeline, list[str], list[str]], TextRows],
    ) -> TextRows:
        from drawer.conditioning import TextRows

        keys = list(zip(prompts, negatives, strict=True))
        missing = list(dict.fromkeys(key for key in keys if key not in self._rows))
        if missing:
            self.text_calls += 1
            rows = encode(pipe, [p for p, _ in missing], [n for _, n in missing])
            for i, key in enumerate(missing):
                self._rows[key] = tuple(
                    None if t is None else t[i : i + 1].clone()
                    for t in (rows.embeds, rows.negative, rows.pooled, rows.negative_pooled)
                )
        for key in keys:
            self._rows.move_to_end(key)
        parts = [self._rows[key] for key in keys]
        while len(self._rows) > max(self.max_rows, len(set(keys))):
            self._rows.popitem(last=False)

        def cat(index: int) -> torch.Tensor | None:
            if parts[0][index] is None:
                return None
            return torch.cat([part[index] for part in parts], dim=0)

        embeds, negative = cat(0), cat(1)
        assert embeds is not None and negative is not None
        return TextRows(embeds=embeds, negative=negative, pooled=cat(2), negative_pooled=cat(3))

    def references(
        self,
        pipe: DiffusionPipeline,
        images: list[Image.Image],
        encode: Callable[[DiffusionPipeline, list[Image.Image]], ReferenceEmbeds],
    ) -> ReferenceEmbeds:
        key = tuple(_image_key(image) for image in images)
        if key not in self._references:
            self.reference_calls += 1
            self._references[key] = encode(pipe, images)
            while len(self._references) > self.max_references:
                self._references.popitem(last=False)
        self._references.move_to_end(key)
        return self._references[key]

    def canvas_weights(self, key: Hashable, compute: Callable[[], torch.Tensor | None]) -> torch.Tensor | None:
        """An item's soft canvas weights (None: a plain box), keyed by `region_key`."""
        if key not in self._canvas:
            self.canvas_calls += 1
            self._canvas[key] = compute()
        return _touch(self._canvas, key, self.max_regions)

    def coverage(
        self, key: Hashable, grids: Sequence[Grid], compute: Callable[[], list[torch.Tensor]]
    ) -> list[torch.Tensor]:
        """An item's coverage [gh, gw] of each grid, keyed by `region_key` and the grids."""
        full = (key, tuple(grids))
        if full not in self._coverage:
            self.coverage_calls += 1
            self._coverage[full] = compute()
        return _touch(self._coverage, full, self.max_regions)


def region_key(item: PlanItem, height: int, width: int) -> Hashable:
    """Exactly what an item's region weights depend on: the canvas size, its box, its mask (PNG bytes or polygon),
    mask_std and mask_strength."""
    mask: Hashable = None
    if item.mask is not None:
        mask = hashlib.sha256(item.mask.png).hexdigest() if item.mask.png is not None else item.mask.model_dump_json()
    box = None if item.box is None else (item.box.x, item.box.y, item.box.w, item.box.h)
    return (height, width, box, mask, item.mask_std, item.mask_strength)


def item_canvas_weights(item: PlanItem, height: int, width: int) -> torch.Tensor | None:
    """drawer.region_masks.canvas_weights, through the live-canvas cache when one is on."""
    from drawer.region_masks import canvas_weights

    cache = active_cache()
    if cache is None:
        return canvas_weights(item, height, width)
    return cache.canvas_weights(region_key(item, height, width), lambda: canvas_weights(item, height, width))


def layout_coverages(
    boxes: Sequence[Box],
    masks: Sequence[torch.Tensor | None] | None,
    keys: Sequence[Hashable] | None,
    grids: Sequence[Grid],
    height: int,
    width: int,
) -> list[torch.Tensor | None]:
    """The `coverage` argument of `layout_weights` at each grid. Without a cache or keys: region_coverage's (None
    when no subject has a mask: the layout computes box coverage itself). With both: each subject's coverage of
    every grid from the cache (the same values, stacked)."""
    from drawer.layout_masks import box_coverage
    from drawer.region_masks import grid_coverage, region_coverage

    cache = active_cache()
    if cache is None or keys is None or not boxes:
        return [region_coverage(boxes, masks, grid, height, width) for grid in grids]
    masks = masks if masks is not None else [None] * len(boxes)

    def compute(box: Box, mask: torch.Tensor | None) -> list[torch.Tensor]:
        if mask is None:
            return [box_coverage(box, grid, height, width) for grid in grids]
        return [grid_coverage(mask, grid, height, width) for grid in grids]

    per_item = [
        cache.coverage(key, grids, lambda box=box, mask=mask: compute(box, mask))
        for box, mask, key in zip(boxes, masks, keys, strict=True)
    ]
    return [torch.stack([levels[g] for levels in per_item]) for g in range(len(grids))]


def _touch(cache: OrderedDict[Hashable, Any], key: Hashable, limit: int) -> Any:
    cache.move_to_end(key)
    value = cache[key]
    while len(cache) > limit:
        cache.popitem(last=False)
    return value


def _image_key(image: Image.Image) -> str:
    digest = hashlib.sha256(image.tobytes())
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()
