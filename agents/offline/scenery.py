"""Prepositional objects: a thing (not a person or an animal) after a place preposition ('jumps onto the
table', 'hides behind a tree', 'leans against the car'), also when owned ('onto the chef's table'), is part
of the scene: it refers to a subject already drawn when there is one, and is otherwise left to the caption
rather than made a new subject. Beside, near and next to keep the thing a subject (it stands next to someone:
'a sparrow near a shelf')."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import PLACE_PREP_HEADS, PLACE_PREPS
from agents.vocabulary import NOUNS, animate

NEARBY = frozenset({"near", "beside", "next"})
"""Prepositions after which a thing stands beside the subject and keeps a box of its own."""


def _place_preposition(tokens: list[str], start: int) -> str | None:
    """The place preposition right before tokens[start] ('onto', 'next' for 'next to', 'front' for 'in front of')."""
    if start == 0:
        return None
    before = tokens[start - 1]
    if before in {"to", "of"} and start >= 2 and tokens[start - 2] in PLACE_PREP_HEADS:
        return tokens[start - 2]
    if before == "of":
        return _part_of_place(tokens, start - 1)
    return before if before in PLACE_PREPS else None


def _part_of_place(tokens: list[str], of: int) -> str | None:
    """'onto the roof of the house': the place preposition before the part that 'of' follows (up to three
    words back, not across a noun of the vocabulary)."""
    for k in range(of - 1, max(of - 5, -1), -1):
        if tokens[k] in PLACE_PREPS:
            return tokens[k]
        if tokens[k] in NOUNS or not tokens[k].isalpha():
            return None
    return None


def mark_scenery(tokens: list[str], mentions: list[Mention]) -> None:
    """Set `scenery` on things placed by a preposition or owned by a possessor (accessories excepted: they
    become components)."""
    for m in mentions:
        if m.pronoun or m.named_id or m.anaphor or animate(m.noun):
            continue
        entry = NOUNS.get(m.noun)
        if entry is None or (entry.accessory and m.possessor is not None):
            continue
        preposition = _place_preposition(tokens, m.phrase_start)
        if m.possessor is not None:
            preposition = _place_preposition(tokens, m.possessor.phrase_start)
        if preposition is not None and preposition not in NEARBY:
            m.scenery = True
