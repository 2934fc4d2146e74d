"""Live canvas (docs/fast_mode.md): while a draw runs with `settings.live_canvas`, text encodings and reference
tokens come from an LRU cache on the drawer, so re-drawing after a prompt, box or mask edit encodes only what
changed and the edit costs one (fast) generation.

Text rows are cached one (prompt, negative) pair at a time: an edit of one subject's phrase re-encodes that row
only (the missing rows of a call are encoded together in one encoder call). Reference images are cached as the
whole list of a call, keyed by their pixels. The cache is switched on for the current thread (a ContextVar)
by `EncodingCache.use()`; `drawer.conditioning` consults it."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

    from drawer.conditioning import ReferenceEmbeds, TextRows

_ACTIVE: ContextVar[EncodingCache | None] = ContextVar("studio_live_canvas", default=None)


def active_cache() -> EncodingCache | None:
    return _ACTIVE.get()


class EncodingCache:
    """LRU caches of text rows and reference embeddings for one pipeline."""

    def __init__(self, max_rows: int = 256, max_references: int = 16) -> None:
        self.max_rows = max_rows
        self.max_references = max_references
        self._rows: OrderedDict[tuple[str, str], tuple[torch.Tensor, ...]] = OrderedDict()
        self._references: OrderedDict[tuple[str, ...], Any] = OrderedDict()
        self.text_calls = 0
        """Encoder calls made through the cache (for tests and benches)."""
        self.reference_calls = 0

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


def _image_key(image: Image.Image) -> str:
    digest = hashlib.sha256(image.tobytes())
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()
