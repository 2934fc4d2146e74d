"""Spatial phrases: 'on the left/right (side)', 'to the left/right (side) of', 'on his right', 'above/over/
below/under/beneath', 'in the middle', 'riding / onto / on top of' → (subject id, relation, other id or None)
around the mentions. A side phrase belongs to the noun right before it when that noun has no verb of its own
('…, the girl on the left'; '… and a dragon on the right side'), else to its clause's subject ('she waves at
him from the left side'), else, when it opens the clause, to the subject after it ('On the left, a woman …';
'To the right of the girl, a boy …'). A phrase cut short ('… from the left side of') keeps the side."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import CLAUSE_END, POSSESSIVE_MARK, POSSESSIVE_PRONOUNS, PRONOUNS_GROUP, SENTENCE_END

RelationTriple = tuple[str, str, str | None]
VERTICAL = {"above": "above", "over": "above", "below": "below", "under": "below", "beneath": "below"}


UNLINKED = frozenset({"and", "while", "with", "then"})
"""Words before a noun phrase that leave it without a verb of its own ('… and a dragon on the right side')."""
SIDE_PREPOSITIONS = frozenset({"on", "to", "at", "from", "in", "by"})
SEGMENT_OPENERS = frozenset({"and", "while", "but", "then", "as", "when", "so", "whereas"})
"""Words that open a new clause with its own subject ('… and a giraffe walks on the right')."""


class _Placed:
    """The mentions that get a box of their own (shown, not a component), looked up by position within the
    sentence."""

    def __init__(self, tokens: list[str], mentions: list[Mention]) -> None:
        self.tokens = tokens
        self.mentions = [m for m in mentions if m.ids and not m.leaving and m.owner is None]

    def _boundary(self, k: int, ends: frozenset[str]) -> int:
        """The first token of the sentence (or clause) holding token k."""
        return next((j + 1 for j in range(k - 1, -1, -1) if self.tokens[j] in ends), 0)

    def _sentence_end(self, k: int) -> int:
        return next((j for j in range(k, len(self.tokens)) if self.tokens[j] in SENTENCE_END), len(self.tokens))

    def before(self, k: int) -> Mention | None:
        """The last mention ending at or before token k in its sentence (not they/them)."""
        start = self._boundary(k, SENTENCE_END)
        return next(
            (m for m in reversed(self.mentions) if start <= m.start and m.end <= k and m.pronoun not in PRONOUNS_GROUP),
            None,
        )

    def after(self, k: int) -> Mention | None:
        """The first mention starting after token k in its sentence; for a possessor, what it owns when that is
        placed ('of his mother' → the mother)."""
        end = self._sentence_end(k + 1)
        found = next((m for m in self.mentions if k < m.start < end), None)
        owned = next((m for m in self.mentions if found is not None and m.possessor is found), None)
        return owned or found

    def owner_of_phrase(self, start: int, end: int) -> Mention | None:
        """Who a side phrase at tokens[start:end] places: the verbless noun right before it, the clause's
        subject, or the subject right after it."""
        clause = self._boundary(start, CLAUSE_END)
        right_before = next((m for m in self.mentions if m.end == start), None)
        if right_before is not None and not right_before.pronoun:
            opener = right_before.phrase_start - 1
            if opener < clause or self.tokens[opener] in UNLINKED:
                return right_before
        before = [m for m in self.mentions if clause <= m.start and m.end <= start]
        openers = [m for n, m in enumerate(before) if n == 0 or self._opens_segment(m, before[n - 1])]
        return openers[-1] if openers else self.after(end - 1)

    def _opens_segment(self, m: Mention, previous: Mention) -> bool:
        """Whether m is the subject of a new clause joined by 'and'/'while'…: 'an elephant walks on the left
        and a giraffe walks on the right' (not 'a girl and a boy', where 'and' joins two nouns)."""
        opener = m.phrase_start - 1
        return self.tokens[opener] in SEGMENT_OPENERS and opener > previous.end


def _pairs(a: Mention, kind: str, b: Mention) -> list[RelationTriple]:
    return [(sid, kind, other) for sid in a.ids for other in b.ids if sid != other]


def _phrase_start(tokens: list[str], k: int) -> int:
    """The preposition opening the side phrase whose side word is at k ('on' of 'on the far left'), or k."""
    j = k - 1
    while j >= 0 and tokens[j] in {"the", "very", "far"}:
        j -= 1
    return j if j >= 0 and tokens[j] in SIDE_PREPOSITIONS else k


def _sideways(tokens: list[str], k: int, placed: _Placed) -> list[RelationTriple]:
    """'A to the left (side) of B' → left_of; 'A on the right' → right; 'on his right, A' → A right_of him."""
    tok = tokens[k]
    end = k + 1
    while end < len(tokens) and tokens[end] in {"side", "hand"}:
        end += 1
    start = _phrase_start(tokens, k)
    relative = next((m for m in placed.mentions if m.end == k and tokens[k - 1] in POSSESSIVE_PRONOUNS), None)
    if relative is None and k > 1 and tokens[k - 1] == POSSESSIVE_MARK:
        relative = next((m for m in placed.mentions if m.end == k - 1), None)
    if relative is not None:
        a = placed.owner_of_phrase(min(start, relative.phrase_start), end)
        return _pairs(a, f"{tok}_of", relative) if a and a is not relative else []
    nxt = tokens[end] if end < len(tokens) else ""
    b = placed.after(end) if nxt == "of" else None
    if b is not None:
        a = placed.owner_of_phrase(start, b.end) if start < k else placed.before(start)
        a = a if a is not b else _subject_after_object(b, placed)
        return _pairs(a, f"{tok}_of", b) if a else []
    if tokens[k - 1] == "the" or nxt == "of":
        a = placed.owner_of_phrase(start, end)
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
    placed = _Placed(tokens, mentions)
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
