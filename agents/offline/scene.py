"""Scene changes: the background named after a preposition ('in the silent library', 'on the road to
school') or by 'the background changes to …'."""

from __future__ import annotations

import re

from agents.offline.words import DETERMINERS, SCENE_PREPS, SCENE_STOP
from agents.vocabulary import SCENES

_EXPLICIT = re.compile(
    r"\b(?:background|scene|setting)\s+(?:is\s+now|is|changes\s+to|becomes|turns\s+into|moves\s+to|now)\s+"
    r"(?:to\s+)?([^.;!?]+)",
    re.IGNORECASE,
)


def scene_at(tokens: list[str], i: int) -> tuple[str, int] | None:
    """A background phrase after a preposition at i: ('the silent library', end index)."""
    if tokens[i] not in SCENE_PREPS:
        return None
    j = i + 1
    phrase: list[str] = []
    while j < len(tokens) and len(phrase) < 5 and tokens[j] not in SCENE_STOP:
        phrase.append(tokens[j])
        j += 1
        if tokens[j - 1] in SCENES:
            tail = j
            if j + 1 < len(tokens) and tokens[j] in {"to", "of"} and tokens[j + 1] not in DETERMINERS | SCENE_PREPS:
                phrase += tokens[j : j + 2]
                tail = j + 2
            return " ".join(phrase), tail
    return None


def background(tokens: list[str], message: str) -> str | None:
    """The scene the message asks for, or None (keep the previous one)."""
    explicit = _EXPLICIT.search(message)
    if explicit:
        return explicit.group(1).strip(" ,")
    for i in range(len(tokens)):
        scene = scene_at(tokens, i)
        if scene is not None:
            return scene[0]
    return None
