"""Scene changes: the background named after a preposition or a verb of entering ('in the silent library',
'on the road to school', 'enters a cafe'; 'from the left side of the street' skips the side words), by 'the
background changes to …', or a time, season or weather change ('make it winter with snow falling', 'it is
night now', 'it starts to rain') added to the place of the previous picture."""

from __future__ import annotations

import re

from agents.offline.words import (
    DETERMINERS,
    EXPLETIVE_VERBS,
    SCENE_PREPS,
    SCENE_STOP,
    SCENE_VERBS,
    SENTENCE_END,
    SIDE_WORDS,
    TIMES_AND_WEATHER,
)
from agents.vocabulary import NOUNS, SCENES

_EXPLICIT = re.compile(
    r"\b(?:background|scene|setting)\s+(?:is\s+now|is|changes\s+to|becomes|turns\s+into|moves\s+to|now)\s+"
    r"(?:to\s+)?([^.;!?]+)",
    re.IGNORECASE,
)
_FILLER = frozenset({"now", "already", "suddenly", "again", "then"})


def _after_side_words(tokens: list[str], j: int) -> int | None:
    """Where the place starts after '(the) left side of' / '(the) middle of'; None when the phrase is only a
    side ('on the left'), j when there are no side words."""
    k = j + 1 if j < len(tokens) and tokens[j] in DETERMINERS else j
    if k >= len(tokens) or tokens[k] not in SIDE_WORDS:
        return j
    while k < len(tokens) and tokens[k] in SIDE_WORDS:
        k += 1
    return k + 1 if k < len(tokens) and tokens[k] == "of" else None


def scene_at(tokens: list[str], i: int) -> tuple[str, int] | None:
    """A background phrase after a preposition at i: ('the silent library', end index)."""
    if tokens[i] not in SCENE_PREPS and tokens[i] not in SCENE_VERBS:
        return None
    start = _after_side_words(tokens, i + 1)
    if start is None:
        return None
    j = start
    phrase: list[str] = []
    while j < len(tokens) and len(phrase) < 5 and tokens[j] not in SCENE_STOP:
        if tokens[j] in NOUNS and tokens[j] not in SCENES:
            return None  # 'above the girl in the park': someone, not a place
        phrase.append(tokens[j])
        j += 1
        if tokens[j - 1] in SCENES:
            tail = j
            if j + 1 < len(tokens) and tokens[j] in {"to", "of"} and tokens[j + 1] not in DETERMINERS | SCENE_PREPS:
                phrase += tokens[j : j + 2]
                tail = j + 2
            return " ".join(phrase), tail
    return None


def expletive_it(tokens: list[str], i: int) -> bool:
    """'it is night now', 'it starts to rain', 'make it winter': 'it' followed by a time or weather word."""
    return tokens[i] == "it" and _time_phrase_start(tokens, i) is not None


def _time_phrase_start(tokens: list[str], i: int) -> int | None:
    """Where the time or weather words after 'it' (at i) start, if there are some in its sentence."""
    after_verb = i + 1 < len(tokens) and tokens[i + 1] in EXPLETIVE_VERBS
    after_make = i > 0 and tokens[i - 1] in {"make", "makes", "making"}
    if not (after_verb or after_make):
        return None
    start = i + 1 if after_make else i + 2
    for tok in tokens[start : start + 4]:
        if tok in SENTENCE_END:
            return None
        if tok in TIMES_AND_WEATHER:
            return start
    return None


def _time_change(tokens: list[str]) -> str | None:
    """'winter with snow falling' from 'now make it winter with snow falling'."""
    for i, tok in enumerate(tokens):
        start = _time_phrase_start(tokens, i) if tok == "it" else None
        if start is None:
            continue
        words: list[str] = []
        for word in tokens[start:]:
            if word in SENTENCE_END or word == ",":
                break
            if word in _FILLER or (not words and word == "to"):
                continue
            words.append(word)
        return " ".join(words) or None
    return None


def background(tokens: list[str], message: str, previous: str = "") -> str | None:
    """The scene the message asks for, or None (keep the previous one)."""
    explicit = _EXPLICIT.search(message)
    if explicit:
        return explicit.group(1).strip(" ,")
    place = next((scene[0] for i in range(len(tokens)) if (scene := scene_at(tokens, i)) is not None), None)
    change = _time_change(tokens)
    if change is None:
        return place
    base = place or previous.split(", ")[0]
    return f"{base}, {change}" if base and base not in change else change
