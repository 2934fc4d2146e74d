"""Deterministic per-turn seeds and shard assignment. Both use sha256, never Python's salted `hash()`,
so every process, machine and Python version agrees."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_SEED_BITS = 31  # fits every generator (torch, numpy, the drawer's own) and DrawSettings' bound
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def stable_seed(dialogue: str, turn: int, base_seed: int = 0) -> int:
    """A seed that depends only on (base seed, dialogue name, turn number)."""
    digest = hashlib.sha256(f"{base_seed}\x1f{dialogue}\x1f{turn}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << _SEED_BITS)


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' → (2, 4): the second of four shards. Shards are numbered from 1."""
    match = _SHARD.match(text)
    if not match:
        raise ValueError(f"a shard is written i/n, e.g. 1/4; got {text!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {text!r}: need 1 <= i <= n")
    return index, count


def shard_items(items: Sequence[T], index: int, count: int) -> list[T]:
    """Round-robin over the file's order: item k goes to shard (k mod n) + 1. Every item lands in exactly one
    shard, the shards differ in size by at most one, and the same file always splits the same way."""
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: need 1 <= i <= n")
    return [item for position, item in enumerate(items) if position % count == index - 1]
