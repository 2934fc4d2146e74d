"""Mention scanning: the message as tokens, and every noun phrase from the vocabulary (with its determiner,
up to three describing modifiers and a count) or pronoun in it, in reading order."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.offline.scene import scene_at
from agents.offline.words import (
    COMMON_VERBS,
    DETERMINERS,
    MAX_SUBJECTS,
    NEW_MARKERS,
    PRONOUNS,
    STOP,
    VERB_CONTEXT,
    WEAR_VERBS,
)
from agents.vocabulary import NOUNS, NUMBERS, singular

_TOKEN = re.compile(r"[A-Za-z0-9']+|[,.;:!?]")


@dataclass
class Mention:
    """A noun phrase or pronoun at tokens[start:end]; the later steps fill in ids, departure and owner."""

    start: int
    end: int
    noun: str
    ids: list[str] = field(default_factory=list)
    determiner: str | None = None
    modifiers: list[str] = field(default_factory=list)
    pronoun: str | None = None
    count: int = 1
    plural: bool = False
    leaving: bool = False
    owner: Mention | None = None
    with_owner: Mention | None = None
    phrase_start: int = 0


def tokenize(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def match_noun(tokens: list[str], i: int) -> tuple[str, int, bool] | None:
    """The vocabulary noun starting at i: (singular noun, tokens used, plural)."""
    if i + 1 < len(tokens):
        two = f"{tokens[i]} {tokens[i + 1]}"
        base, plural = singular(two)
        if base in NOUNS:
            return base, 2, plural
    base, plural = singular(tokens[i])
    if base in NOUNS and tokens[i] not in PRONOUNS:
        return base, 1, plural
    return None


def is_modifier(token: str) -> bool:
    """Whether a word before a noun can describe it (adjectives, colours, materials), not a verb or a stop word."""
    if token in STOP or token in WEAR_VERBS or token in COMMON_VERBS:
        return False
    return not (token.endswith("ing") and len(token) > 5)


def scan(tokens: list[str]) -> list[Mention]:
    """Every pronoun and vocabulary noun phrase outside scene phrases, in reading order."""
    mentions: list[Mention] = []
    scene_until = -1
    i = 0
    while i < len(tokens):
        scene = scene_at(tokens, i)
        if scene is not None and match_noun(tokens, i + 1) is None:
            scene_until = scene[1]
        word = tokens[i]
        if word in PRONOUNS:
            mentions.append(Mention(start=i, phrase_start=i, end=i + 1, noun=word, pronoun=word))
            i += 1
            continue
        found = match_noun(tokens, i) if i >= scene_until else None
        if found is None:
            i += 1
            continue
        name, used, plural = found
        after_subject = (bool(mentions) and mentions[-1].end == i) or (i > 0 and tokens[i - 1] in VERB_CONTEXT)
        if plural and after_subject:
            i += used  # "the lion watches": a verb, not two watches
            continue
        mentions.append(_noun_phrase(tokens, i, used, name, plural))
        i += used
    return mentions


def _noun_phrase(tokens: list[str], i: int, used: int, name: str, plural: bool) -> Mention:
    """The noun at tokens[i:i+used] with the determiner, modifiers and count written before it."""
    j = i - 1
    modifiers: list[str] = []
    count = 1
    while j >= 0 and len(modifiers) < 3 and is_modifier(tokens[j]) and match_noun(tokens, j) is None:
        if tokens[j] in NUMBERS:
            break
        if not tokens[j].isalpha():
            break
        modifiers.insert(0, tokens[j])
        j -= 1
    determiner = tokens[j] if j >= 0 and (tokens[j] in DETERMINERS or tokens[j] in NEW_MARKERS) else None
    if j >= 0 and tokens[j] in NUMBERS and plural:
        count = min(NUMBERS[tokens[j]], MAX_SUBJECTS)
    if determiner in NEW_MARKERS or any(m in NEW_MARKERS for m in modifiers):
        determiner = "another"
    return Mention(
        start=i,
        phrase_start=j if j >= 0 and (tokens[j] in DETERMINERS or tokens[j] in NEW_MARKERS) else j + 1,
        end=i + used,
        noun=name,
        determiner=determiner,
        modifiers=[m for m in modifiers if m not in NEW_MARKERS],
        count=count,
        plural=plural,
    )
