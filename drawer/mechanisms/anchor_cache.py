"""ConsiStory's per-subject anchor cache (multi-turn use, docs/mechanisms.md): what a turn records of a subject's
patches, its byte form (the blob the subject memory stores), its size bound, and which cache a subject keeps.

A cache holds, per (step, up-block self-attention layer), the self-attention inputs of the subject's patches
(its mask inside its box), the unconditional and conditional halves stacked as [2, P, C] ([1, P, C] unguided),
on the CPU in the UNet's dtype. Later turns attend to it from inside the subject's box.

Where it lives:
- a job that carries the subject memory's caches (`DrawJob.anchor_caches`, a dict) is served from those only,
  and the caches the render recorded that beat them come back in `DrawResult.anchor_caches`; the studio stores
  them with the subject (studio/memory.py) and owns their validity (a changed reference drops the cache);
- a job without (`anchor_caches` None: the drawer used directly, no subject memory) uses the drawer's own
  in-memory `AnchorStore`, which checks the reference hash itself.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import safetensors.torch
import torch

from studio.failures import DrawError


@dataclass
class AnchorCache:
    """One subject's cached anchor patches: per (step, up-block layer) the self-attention inputs of its subject
    patches, [unconditional; conditional] halves stacked as [2, P, C] (or [1, P, C] unguided), on the CPU."""

    subject_id: str
    reference_hash: str
    steps: int
    area: float
    patches: dict[tuple[int, str], torch.Tensor] = field(default_factory=dict)
    _recorded_steps: list[int] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.patches.values())

    def recorded_steps(self) -> list[int]:
        """The steps the cache holds, ascending (a trimmed cache holds a subset of the render's steps)."""
        if self._recorded_steps is None:
            self._recorded_steps = sorted({step for step, _ in self.patches})
        return self._recorded_steps

    def to_bytes(self) -> bytes:
        """The cache as one safetensors blob (what the subject memory stores; content-addressed by its hash)."""
        tensors = {f"{step}|{layer}": patches.contiguous() for (step, layer), patches in self.patches.items()}
        meta = {
            "subject_id": self.subject_id,
            "reference_hash": self.reference_hash,
            "steps": str(self.steps),
            "area": repr(self.area),
        }
        return safetensors.torch.save(tensors, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> AnchorCache:
        with safe_open_bytes(data) as (tensors, meta):
            patches = {(int(key.split("|", 1)[0]), key.split("|", 1)[1]): value for key, value in tensors.items()}
        return cls(meta["subject_id"], meta["reference_hash"], int(meta["steps"]), float(meta["area"]), patches)

    def at(self, step: int, steps: int, layer: str) -> torch.Tensor | None:
        """The patches of `layer` for step `step` of a `steps`-step render: the cached step in the same proportion
        of the recorded render, or the nearest step the cache holds when it was trimmed."""
        cached_step = round(step * (self.steps - 1) / max(steps - 1, 1)) if self.steps > 1 else 0
        found = self.patches.get((cached_step, layer))
        if found is not None:
            return found
        held = self.recorded_steps()
        if not held:
            return None
        i = bisect.bisect_left(held, cached_step)
        nearest = min(held[max(i - 1, 0) : i + 1], key=lambda s: (abs(s - cached_step), s))
        return self.patches.get((nearest, layer))

    def trimmed(self, max_bytes: int) -> AnchorCache | None:
        """The cache within `max_bytes` (docs/mechanisms.md, "Anchor cache storage"): all of it while it fits;
        else the most evenly spaced of its steps that fit, keeping at least `MIN_STEPS` (later reads use the
        nearest held step); when even those do not fit, every k-th patch of each of them (thinned like the
        anchors' own mask dropout); None when even that does not fit (refused)."""
        if self.nbytes <= max_bytes:
            return self
        held = self.recorded_steps()
        per_step = {s: 0 for s in held}
        for (step, _), tensor in self.patches.items():
            per_step[step] += tensor.numel() * tensor.element_size()
        floor = min(MIN_STEPS, len(held))
        for count in range(len(held) - 1, floor - 1, -1):
            kept = _evenly_spaced(held, count)
            if sum(per_step[s] for s in kept) <= max_bytes:
                return self._subset(kept, 1)
        kept = _evenly_spaced(held, floor)
        stride = math.ceil(sum(per_step[s] for s in kept) / max(max_bytes, 1))
        thinned = self._subset(kept, stride)
        return thinned if thinned.nbytes <= max_bytes else None

    def _subset(self, steps: set[int], stride: int) -> AnchorCache:
        patches = {key: t[:, ::stride].contiguous() for key, t in self.patches.items() if key[0] in steps}
        return AnchorCache(self.subject_id, self.reference_hash, self.steps, self.area, patches)


MIN_STEPS = 4
"""A trimmed cache keeps at least this many steps (spread over the render); below that it thins patches."""


def _evenly_spaced(items: list[int], count: int) -> set[int]:
    """`count` members of `items` spread evenly over it (first and last included when count > 1)."""
    if count == 1:
        return {items[len(items) // 2]}
    return {items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)}


@contextmanager
def safe_open_bytes(data: bytes) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, str]]]:
    """Tensors and metadata of a safetensors blob."""
    header_length = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8 : 8 + header_length]).get("__metadata__", {})
    yield safetensors.torch.load(data), meta


def reference_hash(data: bytes | None) -> str:
    """What invalidates a subject's anchor cache: the content hash of its reference image ("" without one)."""
    return hashlib.sha256(data).hexdigest() if data else ""


def usable_cache(cache: AnchorCache, reference: bytes | None) -> bool:
    """A cache serves a subject while its reference is the one the cache was recorded with. A cache recorded
    before the subject had a reference (its first turn, whose crop becomes the reference) is adopted by it."""
    return not cache.reference_hash or cache.reference_hash == reference_hash(reference)


def better(recorded: AnchorCache, current: AnchorCache | None) -> bool:
    """Whether a freshly recorded cache replaces the subject's current one: the turn where the subject was best
    seen (the largest box) wins; a render that recorded nothing never replaces."""
    return bool(recorded.patches) and (current is None or recorded.area >= current.area)


@dataclass
class AnchorStore:
    """The drawer's own per-subject anchor caches, for jobs that carry no subject memory (in memory; the
    best-seen turn per subject; each cache trimmed to `max_bytes`)."""

    caches: dict[str, AnchorCache] = field(default_factory=dict)

    def usable(self, subject_id: str, reference: bytes | None) -> AnchorCache | None:
        cache = self.caches.get(subject_id)
        if cache is not None and not usable_cache(cache, reference):
            del self.caches[subject_id]
            return None
        if cache is not None and not cache.reference_hash and reference:
            cache.reference_hash = reference_hash(reference)
        return cache

    def offer(self, recorded: dict[str, AnchorCache], max_bytes: int | None = None) -> None:
        for subject_id, cache in recorded.items():
            if not better(cache, self.caches.get(subject_id)):
                continue
            kept = cache if max_bytes is None else cache.trimmed(max_bytes)
            if kept is not None:
                self.caches[subject_id] = kept


def decode_caches(blobs: dict[str, bytes]) -> dict[str, AnchorCache]:
    """The caches a job carries, by subject id (DrawError naming the subject for a blob that is not one)."""
    out = {}
    for subject_id, data in blobs.items():
        try:
            cache = AnchorCache.from_bytes(data)
        except Exception as exc:
            raise DrawError(f"the anchor cache of subject {subject_id} cannot be read ({type(exc).__name__})") from exc
        out[subject_id] = cache
    return out


def caches_to_return(
    recorded: dict[str, AnchorCache], given: dict[str, AnchorCache], max_bytes: int
) -> dict[str, bytes]:
    """The recorded caches that replace the ones the job gave (best seen), trimmed to `max_bytes`, as blobs."""
    out = {}
    for subject_id, cache in recorded.items():
        if not better(cache, given.get(subject_id)):
            continue
        kept = cache.trimmed(max_bytes)
        if kept is not None:
            out[subject_id] = kept.to_bytes()
    return out
