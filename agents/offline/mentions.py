"""Mention scanning: the message as tokens, and every noun phrase from the vocabulary (with its determiner,
up to three describing modifiers and a count), pronoun, 'one' standing for a noun ('a black one') or known
name ('Anna') in it, in reading order. 'It' that names no subject ('it is night', 'make it winter') is
skipped."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.offline.scene import expletive_it, scene_at
from agents.offline.words import (
    ANAPHOR,
    COMMON_VERBS,
    DETERMINERS,
    GROUP_COUNTS,
    MAX_SUBJECTS,
    NAME_MARKERS,
    NEW_MARKERS,
    POSSESSIVE_MARK,
    PRONOUNS,
    STOP,
    VERB_CONTEXT,
    VERB_NOUNS,
    WEAR_VERBS,
)
from agents.vocabulary import NOUNS, NUMBERS, singular

_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[,.;:!?]")


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
    possessor: Mention | None = None
    """Who owns the phrase: 'the chef' in 'the chef's table', 'her' in 'her hat'."""
    scenery: bool = False
    """A thing after a place preposition ('onto the table'): a known subject or part of the scene."""
    anaphor: bool = False
    """'one' in 'a black one': the noun is the kind named before."""
    name: str | None = None
    """The name given to a new subject ('a girl named Anna')."""
    named_id: str | None = None
    """The known subject a name refers to ('Anna waves')."""


def tokenize(text: str) -> list[str]:
    """Lower-case words and punctuation; a possessive 's is a token of its own ('chef's' → 'chef', "'s")."""
    tokens: list[str] = []
    for token in _TOKEN.findall(text):
        token = token.lower()
        if token.endswith(POSSESSIVE_MARK) and len(token) > 2:
            tokens += [token[:-2], POSSESSIVE_MARK]
        else:
            tokens.append(token)
    return tokens


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


def _anaphor(tokens: list[str], i: int) -> Mention | None:
    """'a black one', 'the small one', 'another one': a noun phrase whose noun is named elsewhere."""
    if tokens[i] != ANAPHOR or i == 0 or (i + 1 < len(tokens) and match_noun(tokens, i + 1) is not None):
        return None
    if i + 1 < len(tokens) and tokens[i + 1] == "of":
        return None
    phrase = _noun_phrase(tokens, i, 1, ANAPHOR, False)
    if not phrase.modifiers and phrase.determiner != "another":
        return None
    phrase.anaphor = True
    return phrase


def scan(tokens: list[str], names: dict[str, tuple[str, str]] | None = None) -> list[Mention]:
    """Every pronoun, known name (`names`: name → (id, noun)) and vocabulary noun phrase outside scene
    phrases, in reading order; a name after 'named'/'called' is given to the mention before it."""
    names = names or {}
    mentions: list[Mention] = []
    scene_until = -1
    i = 0
    while i < len(tokens):
        scene = scene_at(tokens, i)
        if scene is not None and match_noun(tokens, i + 1) is None:
            scene_until = scene[1]
        word = tokens[i]
        if i > 0 and tokens[i - 1] in NAME_MARKERS and word.isalpha():
            if mentions and mentions[-1].end == i - 1:
                mentions[-1].name = word.capitalize()
            i += 1
            continue
        if word in names:
            sid, kind = names[word]
            mentions.append(Mention(start=i, phrase_start=i, end=i + 1, noun=kind, named_id=sid))
            i += 1
            continue
        if word in PRONOUNS and not expletive_it(tokens, i):
            mentions.append(Mention(start=i, phrase_start=i, end=i + 1, noun=word, pronoun=word))
            i += 1
            continue
        if (one := _anaphor(tokens, i)) is not None:
            mentions.append(one)
            i += 1
            continue
        found = match_noun(tokens, i) if i >= scene_until else None
        if found is None:
            i += 1
            continue
        name, used, plural = found
        first = mentions[-1] if mentions and mentions[-1].end == i and not mentions[-1].pronoun else None
        if _is_verb(tokens, i, plural, first):
            i += used  # "the lion watches": a verb, not two watches
            continue
        phrase = _noun_phrase(tokens, i, used, name, plural)
        if first is not None and not first.anaphor:
            phrase = _compound(tokens, mentions.pop(), phrase)  # "a baby panda": the first noun describes the second
        mentions.append(phrase)
        i += used
    return mentions


def _is_verb(tokens: list[str], i: int, plural: bool, first: Mention | None) -> bool:
    """Whether the noun-looking word at i is a verb: an s-form right after a subject or 'who'/'and' ('the lion
    watches'; but 'two baby pandas' is a compound), or 'fish'/'duck' after a plural subject ('a boy and his
    grandfather fish')."""
    if plural:
        if first is not None:
            number = tokens[first.phrase_start - 1] if first.phrase_start > 0 else ""
            return not (number in NUMBERS and not first.plural)
        return i > 0 and tokens[i - 1] in VERB_CONTEXT
    if first is None or tokens[i] not in VERB_NOUNS:
        return False
    conjoined = first.phrase_start > 0 and tokens[first.phrase_start - 1] == "and"
    return first.plural or conjoined


def _compound(tokens: list[str], first: Mention, second: Mention) -> Mention:
    """'a baby panda', 'two baby pandas': one noun phrase, the first noun a modifier of the second."""
    second.phrase_start, second.determiner = first.phrase_start, first.determiner
    second.modifiers = [*first.modifiers, first.noun][-3:]
    number = tokens[first.phrase_start - 1] if first.phrase_start > 0 else ""
    if second.plural and number in NUMBERS:
        second.count = min(NUMBERS[number], MAX_SUBJECTS)
    return second


def _noun_phrase(tokens: list[str], i: int, used: int, name: str, plural: bool) -> Mention:
    """The noun at tokens[i:i+used] with the determiner, modifiers and count written before it."""
    j = i - 1
    modifiers: list[str] = []
    count = 1
    while j >= 0 and len(modifiers) < 3 and is_modifier(tokens[j]) and match_noun(tokens, j) is None:
        if tokens[j] in NUMBERS or tokens[j] in GROUP_COUNTS:
            break
        if not tokens[j].isalpha():
            break
        modifiers.insert(0, tokens[j])
        j -= 1
    determiner = tokens[j] if j >= 0 and (tokens[j] in DETERMINERS or tokens[j] in NEW_MARKERS) else None
    if j >= 0 and tokens[j] in NUMBERS and plural:
        count = min(NUMBERS[tokens[j]], MAX_SUBJECTS)
    group = tokens[j - 1] if j >= 1 and tokens[j] == "of" else tokens[j] if j >= 0 else ""
    if group in GROUP_COUNTS and plural:
        count = GROUP_COUNTS[group]
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
