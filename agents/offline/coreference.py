"""Coreference: which subject each mention means. Pronouns go to the most salient subject of their gender;
an object pronoun ('him', 'her', 'it', 'them') not to the subject of its own clause ('a blue car stops next
to it'). They/them mean every subject named before in the message when there are two or more, else the
previous picture. Nouns go to a remembered subject of the same or a more specific kind ('the bird' → the
sparrow) whose distinguishing adjectives agree ('the white cat' is not the black one), or become new
subjects with the next free ids; a known name ('Anna') is its subject; 'a black one' takes its kind from the
noun before it (and describes one of 'two cats' named before); a thing that is part of the scene ('onto the
table') is only ever a subject already drawn."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.offline.mentions import Mention
from agents.offline.words import DISTINGUISHING, NEW_MARKERS, PRONOUNS, THING_PERSONS
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
    elaborated: set[str] = field(default_factory=set)
    """Subjects of a plural phrase already described one by one ('a black one')."""


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


OBJECT_FORMS = frozenset({"him", "her", "it", "them", "themselves"})


def resolve_pronoun(
    word: str, turn: Resolution, earlier: list[Mention], clause: list[Mention] | None = None, owns: bool = False
) -> list[str]:
    """The ids a pronoun means. `earlier`: the mentions before it in the message; `clause`: those of them in
    its clause; `owns`: it starts a noun phrase ('her hat'), so it may be the clause's subject."""
    kind = PRONOUNS[word]
    clause_ids = {sid for m in (clause or []) for sid in m.ids} if word in OBJECT_FORMS and not owns else set()
    if kind == "group":
        return _group(turn, earlier, clause_ids)
    ordered = _salience(turn)
    found = _pronoun_in(kind, [s for s in ordered if s.id not in clause_ids])
    return found or _pronoun_in(kind, ordered)


def _group(turn: Resolution, earlier: list[Mention], clause_ids: set[str]) -> list[str]:
    """They/them: the subjects named before in the message (two or more), else the previous picture; an object
    'them' leaves out its clause's subjects ('she hugs them'), or at least the nearest one."""
    named = list(dict.fromkeys(sid for m in earlier if not m.leaving for sid in m.ids))
    pool = named if len(named) >= 2 else list(turn.previous_ids)
    kept = [sid for sid in pool if sid not in clause_ids]
    if not kept and earlier:
        kept = [sid for sid in pool if sid not in earlier[-1].ids]
    return kept or pool


def _pronoun_in(kind: str, ordered: list[Subject]) -> list[str]:
    for subject in ordered:
        if subject.parent_id is not None:
            continue
        gender = _gender(subject)
        if kind == "neutral" and gender == "neutral" and (not _is_person(subject) or subject.name in THING_PERSONS):
            return [subject.id]
        if kind in ("female", "male") and gender == kind:
            return [subject.id]
    if kind in ("female", "male"):
        for subject in ordered:
            if subject.parent_id is None and _gender(subject) == "neutral" and _is_person(subject):
                return [subject.id]
    return []


def _distinguishing(text: str) -> list[frozenset[str]]:
    words = set(text.lower().split())
    return [group & words for group in DISTINGUISHING]


def agrees(modifiers: list[str], subject: Subject) -> bool:
    """Whether no distinguishing adjective of the mention contradicts the subject's description ('white' is
    not 'black'; 'tall' is not 'short')."""
    wanted = _distinguishing(" ".join(modifiers))
    have = _distinguishing(subject.description or subject.name)
    return all(not w or not h or bool(w & h) for w, h in zip(wanted, have, strict=True))


def _matching(mention: Mention, turn: Resolution) -> list[Subject]:
    """Remembered (or just created) subjects the noun phrase can mean, best first: same kind, agreeing
    adjectives, the ones described with the mention's adjectives before the others, then by salience."""
    candidates = [s for s in _salience(turn) if same_kind(mention.noun, s.name) and agrees(mention.modifiers, s)]
    if mention.owner is None:
        candidates = [s for s in candidates if s.parent_id is None]
    else:
        candidates = [s for s in candidates if s.parent_id in mention.owner.ids]
    said = {w for group in _distinguishing(" ".join(mention.modifiers)) for w in group}
    return sorted(candidates, key=lambda s: not said <= set((s.description or "").lower().split()))


def resolve_anaphor(mention: Mention, turn: Resolution, earlier: list[Mention], used: set[str]) -> list[str]:
    """'a black one': the kind comes from the last noun before it in the message (a plural one such as 'two
    cats' is described one by one), else from the remembered subject the adjectives describe."""
    source = next((m for m in reversed(earlier) if not m.pronoun and not m.anaphor and m.ids), None)
    if source is not None:
        mention.noun = source.noun
        if len(source.ids) >= 2 and mention.determiner != "another":
            return _describe_one_of(mention, source, turn)
        return resolve_noun(mention, turn, used)
    said = mention.modifiers
    for subject in _salience(turn):
        if subject.parent_id is None and said and all(w in (subject.description or "").lower() for w in said):
            mention.noun = subject.name
            return [subject.id]
    return []


def _describe_one_of(mention: Mention, group: Mention, turn: Resolution) -> list[str]:
    """'two cats …, a black one and a white one': the next cat of the group not yet described gets 'black'."""
    described = {sid for sid in group.ids if sid in turn.elaborated}
    sid = next((sid for sid in group.ids if sid not in described), None)
    if sid is None:
        return []
    turn.elaborated.add(sid)
    mention.modifiers = [*mention.modifiers, *(w for w in group.modifiers if w not in mention.modifiers)]
    if sid in turn.new:
        turn.new[sid] = turn.new[sid].model_copy(update={"description": description(mention)})
    return [sid]


def resolve_noun(mention: Mention, turn: Resolution, used: set[str]) -> list[str]:
    if mention.named_id is not None:
        return [mention.named_id]
    wants_new = mention.determiner in NEW_MARKERS or any(w in NEW_MARKERS for w in mention.modifiers)
    candidates = [] if wants_new else _matching(mention, turn)
    if mention.scenery:
        return [s.id for s in candidates[:1]]
    if mention.leaving:  # only someone already there can leave
        return [s.id for s in candidates][: None if mention.plural and mention.count == 1 else mention.count]
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
    named = f" named {mention.name}" if mention.name else ""
    return f"{article} {' '.join(parts)}{named}"


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
