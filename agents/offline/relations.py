"""Spatial phrases: 'on the left/right', 'to the left/right of', 'above/over/below/under/beneath',
'in the middle', 'riding / onto / on top of' → (subject id, relation, other id or None) around the mentions."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import PRONOUNS_GROUP

RelationTriple = tuple[str, str, str | None]
VERTICAL = {"above": "above", "over": "above", "below": "below", "under": "below", "beneath": "below"}


class _Placed:
    """The mentions that get a box of their own (shown, not a component), looked up by position."""

    def __init__(self, mentions: list[Mention]) -> None:
        self.mentions = [m for m in mentions if m.ids and not m.leaving and m.owner is None]

    def before(self, k: int) -> Mention | None:
        """The last mention ending at or before token k (not they/them)."""
        return next((m for m in reversed(self.mentions) if m.end <= k and m.pronoun not in PRONOUNS_GROUP), None)

    def after(self, k: int) -> Mention | None:
        """The first mention starting after token k."""
        return next((m for m in self.mentions if m.start > k), None)


def _pairs(a: Mention, kind: str, b: Mention) -> list[RelationTriple]:
    return [(sid, kind, other) for sid in a.ids for other in b.ids if sid != other]


def _sideways(tokens: list[str], k: int, placed: _Placed) -> list[RelationTriple]:
    """'A to the left of B' → left_of; 'A on the right' → right."""
    tok = tokens[k]
    nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
    if nxt == "of":
        a, b = placed.before(k), placed.after(k + 1)
        return _pairs(a, f"{tok}_of", b) if a and b else []
    if k > 0 and tokens[k - 1] == "the":
        a = placed.before(k) or placed.after(k)
        return [(sid, tok, None) for sid in a.ids] if a else []
    return []


def _vertical(tokens: list[str], k: int, placed: _Placed) -> list[RelationTriple]:
    """'A above B' → above; 'Above B, A …' (the object first) → A above B."""
    kind = VERTICAL[tokens[k]]
    b = placed.after(k)
    a = placed.before(k)
    if b is not None and a is not None and (k == 0 or tokens[k - 1] not in {",", "."}):
        return _pairs(a, kind, b)
    if b is not None:
        c = _subject_after_object(b, placed)
        if c is not None:
            return _pairs(c, kind, b)
    return []


def _subject_after_object(b: Mention, placed: _Placed) -> Mention | None:
    """The subject of 'Above B, A …': the first mention after B. A pronoun object can be followed at once by
    the subject ('under it she sleeps'); a noun directly after a noun object is part of a compound ('the baby
    elephant'), so after a noun object the subject starts one token later at the earliest."""
    return placed.after(b.end - 1) if b.pronoun else placed.after(b.end)


def _center(tokens: list[str], k: int, placed: _Placed) -> list[RelationTriple]:
    """'A in the middle' → center."""
    if k > 0 and tokens[k - 1] == "the":
        a = placed.before(k) or placed.after(k)
        return [(sid, "center", None) for sid in a.ids] if a else []
    return []


def _on(tokens: list[str], k: int, placed: _Placed) -> list[RelationTriple]:
    """'A riding B', 'A on top of B' → on."""
    a, b = placed.before(k), placed.after(k)
    return _pairs(a, "on", b) if a and b else []


def relations(tokens: list[str], mentions: list[Mention]) -> list[RelationTriple]:
    """(subject_id, relation, other_id) from the spatial words around the mentions, in reading order."""
    found: list[RelationTriple] = []
    placed = _Placed(mentions)
    for k, tok in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
        if tok in {"left", "right"}:
            found += _sideways(tokens, k, placed)
        elif tok in VERTICAL:
            found += _vertical(tokens, k, placed)
        elif tok in {"middle", "center", "centre"}:
            found += _center(tokens, k, placed)
        elif tok in {"riding", "rides", "onto"} or (tok == "on" and nxt in {"top"}):
            found += _on(tokens, k, placed)
    return found
