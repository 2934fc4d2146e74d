"""Coreference: which subject each mention means. Pronouns go to the most salient subject of their gender
(they/them: the previous picture); nouns go to a remembered subject of the same or a more specific kind
('the bird' → the sparrow), or become new subjects with the next free ids."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.offline.mentions import Mention
from agents.offline.words import NEW_MARKERS, PRONOUNS
from agents.schemas import AttributeUpdate, SubjectMention
from agents.vocabulary import noun, same_kind
from studio.subjects import Subject, next_component_id, next_mother_id


@dataclass
class Resolution:
    """What the message has resolved to so far: the ids taken, the subjects shown (in order of mention) and
    the new subjects it introduced."""

    memory: list[Subject]
    previous_ids: list[str]
    taken: set[str]
    present: list[str] = field(default_factory=list)
    new: dict[str, SubjectMention] = field(default_factory=dict)
    updates: list[AttributeUpdate] = field(default_factory=list)


def _gender(subject: Subject) -> str:
    entry = noun(subject.name) or noun(subject.name.split()[-1])
    return entry.gender if entry else "neutral"


def _is_person(subject: Subject) -> bool:
    entry = noun(subject.name) or noun(subject.name.split()[-1])
    return bool(entry and entry.person)


def _salience(turn: Resolution) -> list[Subject]:
    """Memory ordered by who was mentioned last: this message, the previous picture, then recency."""
    order = {sid: (0, -n) for n, sid in enumerate(turn.present)}
    for n, sid in enumerate(turn.previous_ids):
        order.setdefault(sid, (1, n))
    subjects = list(turn.memory) + [_as_subject(m) for m in turn.new.values()]

    def key(s: Subject) -> tuple[int, int, int]:
        rank, n = order.get(s.id, (2, 0))
        return rank, n, -(s.refreshed_turn or s.first_seen_turn or 0)

    return sorted(subjects, key=key)


def _as_subject(mention: SubjectMention) -> Subject:
    return Subject(id=mention.id, name=mention.name, description=mention.description)


def resolve_pronoun(word: str, turn: Resolution, earlier: list[Mention]) -> list[str]:
    kind = PRONOUNS[word]
    if kind == "group":
        current = [sid for m in earlier for sid in m.ids]
        return [] if len(set(current)) >= 2 else list(turn.previous_ids)
    for subject in _salience(turn):
        if subject.parent_id is not None:
            continue
        gender = _gender(subject)
        if kind == "neutral" and gender == "neutral" and not _is_person(subject):
            return [subject.id]
        if kind in ("female", "male") and gender == kind:
            return [subject.id]
    if kind in ("female", "male"):
        for subject in _salience(turn):
            if subject.parent_id is None and _gender(subject) == "neutral" and _is_person(subject):
                return [subject.id]
    return []


def resolve_noun(mention: Mention, turn: Resolution, used: set[str]) -> list[str]:
    wants_new = mention.determiner in NEW_MARKERS or any(w in NEW_MARKERS for w in mention.modifiers)
    candidates = [] if wants_new else [s for s in _salience(turn) if same_kind(mention.noun, s.name)]
    if mention.owner is None:
        candidates = [s for s in candidates if s.parent_id is None]
    else:
        candidates = [s for s in candidates if s.parent_id in mention.owner.ids]
    if mention.plural and mention.count == 1:
        return [s.id for s in candidates] or _create(mention, turn, 2)
    ids = [s.id for s in candidates if s.id not in used][: mention.count]
    if len(ids) < mention.count and not mention.plural:
        ids = [s.id for s in candidates][: mention.count]
    missing = mention.count - len(ids)
    return ids + (_create(mention, turn, missing) if missing > 0 else [])


def description(mention: Mention) -> str:
    """'a tiny sparrow': the modifiers and the noun with an indefinite article."""
    parts = [*mention.modifiers, mention.noun]
    article = "an" if parts[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(parts)}"


def _new_id(turn: Resolution, parent: str | None) -> str:
    new_id = next_mother_id(turn.taken) if parent is None else next_component_id(parent, turn.taken)
    turn.taken.add(new_id)
    return new_id


def _create(mention: Mention, turn: Resolution, count: int) -> list[str]:
    ids = []
    parent = mention.owner.ids[0] if mention.owner is not None and mention.owner.ids else None
    for _ in range(count):
        new_id = _new_id(turn, parent)
        turn.new[new_id] = SubjectMention(
            id=new_id,
            status="new",
            name=mention.noun,
            description=description(mention),
            parent_id=parent,
            action="",
        )
        ids.append(new_id)
    return ids
