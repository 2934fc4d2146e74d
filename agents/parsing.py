"""Rule-based reading of a message for the offline planner: noun phrases from a small vocabulary,
pronouns matched to memory by gender and recency, departures, accessories, backgrounds and spatial words."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agents.planner import SubjectRequest
from agents.schemas import AttributeUpdate, Relation, SubjectAnalysis, SubjectMention
from agents.vocabulary import NOUNS, NUMBERS, SCENES, noun, same_kind, singular, words
from studio.subjects import Subject, id_key, next_component_id, next_mother_id

MAX_SUBJECTS = 8
_TOKEN = re.compile(r"[A-Za-z0-9']+|[,.;:!?]")
DETERMINERS = words("a an the this that these those his her their its my our your one some")
NEW_MARKERS = frozenset({"another", "other", "new", "second", "third", "different"})
PRONOUNS = {
    "she": "female",
    "her": "female",
    "herself": "female",
    "he": "male",
    "him": "male",
    "his": "male",
    "himself": "male",
    "it": "neutral",
    "its": "neutral",
    "they": "group",
    "them": "group",
    "their": "group",
    "themselves": "group",
}
SCENE_PREPS = words("in at inside into on to through across near by under along onto from")
STOP = (
    DETERMINERS
    | frozenset(PRONOUNS)
    | SCENE_PREPS
    | words(
        """and or with without of for is are was were be been being has have had now then while as when who which
        there here also very all both each then again still only just not no so but if over above below beneath
        behind beside next left right top bottom middle center front back he she it they we i you"""
    )
)
LEAVE_WORDS = (
    ("leaves",),
    ("has", "left"),
    ("have", "left"),
    ("left", "the"),
    ("exits",),
    ("disappears",),
    ("vanishes",),
    ("departs",),
    ("goes", "away"),
    ("walks", "away"),
    ("runs", "away"),
    ("flies", "away"),
    ("is", "gone"),
    ("are", "gone"),
    ("is", "no", "longer"),
    ("are", "no", "longer"),
)
WEAR_VERBS = words(
    "wears wearing wear holds holding hold carries carrying carry has gets got puts dons takes raises wields grabs "
    "lifts swings draws picks"
)
ACTION_SKIP = frozenset({"and", ",", "is", "are", "was", "were", "now", "then"})


@dataclass
class _Mention:
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
    owner: _Mention | None = None
    with_owner: _Mention | None = None
    phrase_start: int = 0


@dataclass
class _Turn:
    memory: list[Subject]
    previous_ids: list[str]
    taken: set[str]
    present: list[str] = field(default_factory=list)
    new: dict[str, SubjectMention] = field(default_factory=dict)
    updates: list[AttributeUpdate] = field(default_factory=list)


def tokenize(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text)]


def _match_noun(tokens: list[str], i: int) -> tuple[str, int, bool] | None:
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


def _scene_at(tokens: list[str], i: int) -> tuple[str, int] | None:
    """A background phrase after a preposition at i: ('the silent library', end index)."""
    if tokens[i] not in SCENE_PREPS:
        return None
    j = i + 1
    phrase: list[str] = []
    while j < len(tokens) and len(phrase) < 5 and tokens[j] not in {",", ".", ";", "!", "?", "and", "with"}:
        phrase.append(tokens[j])
        j += 1
        if tokens[j - 1] in SCENES:
            tail = j
            if j + 1 < len(tokens) and tokens[j] in {"to", "of"} and tokens[j + 1] not in DETERMINERS | SCENE_PREPS:
                phrase += tokens[j : j + 2]
                tail = j + 2
            return " ".join(phrase), tail
    return None


def _background(tokens: list[str], message: str) -> str | None:
    explicit = re.search(
        r"\b(?:background|scene|setting)\s+(?:is\s+now|is|changes\s+to|becomes|turns\s+into|moves\s+to|now)\s+"
        r"(?:to\s+)?([^.;!?]+)",
        message,
        re.IGNORECASE,
    )
    if explicit:
        return explicit.group(1).strip(" ,")
    for i in range(len(tokens)):
        scene = _scene_at(tokens, i)
        if scene is not None:
            return scene[0]
    return None


def _gender(subject: Subject) -> str:
    entry = noun(subject.name) or noun(subject.name.split()[-1])
    return entry.gender if entry else "neutral"


def _is_person(subject: Subject) -> bool:
    entry = noun(subject.name) or noun(subject.name.split()[-1])
    return bool(entry and entry.person)


def _salience(turn: _Turn) -> list[Subject]:
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


def _resolve_pronoun(word: str, turn: _Turn, earlier: list[_Mention]) -> list[str]:
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


def _new_id(turn: _Turn, parent: str | None) -> str:
    new_id = next_mother_id(turn.taken) if parent is None else next_component_id(parent, turn.taken)
    turn.taken.add(new_id)
    return new_id


def _description(mention: _Mention) -> str:
    parts = [*mention.modifiers, mention.noun]
    article = "an" if parts[0][0] in "aeiou" else "a"
    return f"{article} {' '.join(parts)}"


def _resolve_noun(mention: _Mention, turn: _Turn, used: set[str]) -> list[str]:
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


def _create(mention: _Mention, turn: _Turn, count: int) -> list[str]:
    ids = []
    parent = mention.owner.ids[0] if mention.owner is not None and mention.owner.ids else None
    for _ in range(count):
        new_id = _new_id(turn, parent)
        turn.new[new_id] = SubjectMention(
            id=new_id,
            status="new",
            name=mention.noun,
            description=_description(mention),
            parent_id=parent,
            action="",
        )
        ids.append(new_id)
    return ids


COMMON_VERBS = words(
    "see sees saw watch watching meet meets met hug hugs love loves like likes play plays walk walks run runs sit "
    "sits stand stands look looks feed feeds chase chases ride rides give gives find finds read reads eat eats"
)


def _modifier(token: str) -> bool:
    """Whether a word before a noun can describe it (adjectives, colours, materials), not a verb or a stop word."""
    if token in STOP or token in WEAR_VERBS or token in COMMON_VERBS:
        return False
    return not (token.endswith("ing") and len(token) > 5)


def _scan(tokens: list[str]) -> list[_Mention]:
    mentions: list[_Mention] = []
    scene_until = -1
    i = 0
    while i < len(tokens):
        scene = _scene_at(tokens, i)
        if scene is not None and _match_noun(tokens, i + 1) is None:
            scene_until = scene[1]
        word = tokens[i]
        if word in PRONOUNS:
            mentions.append(_Mention(start=i, phrase_start=i, end=i + 1, noun=word, pronoun=word))
            i += 1
            continue
        found = _match_noun(tokens, i) if i >= scene_until else None
        if found is None:
            i += 1
            continue
        name, used, plural = found
        after_subject = (bool(mentions) and mentions[-1].end == i) or (i > 0 and tokens[i - 1] in VERB_CONTEXT)
        if plural and after_subject:
            i += used  # "the lion watches": a verb, not two watches
            continue
        j = i - 1
        modifiers: list[str] = []
        count = 1
        while j >= 0 and len(modifiers) < 3 and _modifier(tokens[j]) and _match_noun(tokens, j) is None:
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
        mentions.append(
            _Mention(
                start=i,
                phrase_start=j if j >= 0 and (tokens[j] in DETERMINERS or tokens[j] in NEW_MARKERS) else j + 1,
                end=i + used,
                noun=name,
                determiner=determiner,
                modifiers=[m for m in modifiers if m not in NEW_MARKERS],
                count=count,
                plural=plural,
            )
        )
        i += used
    return mentions


def _follows(tokens: list[str], end: int, cue: tuple[str, ...], window: int = 4) -> bool:
    for k in range(end, min(end + window, len(tokens))):
        if tuple(tokens[k : k + len(cue)]) == cue:
            return True
        if tokens[k] in {".", ";", "!", "?"}:
            return False
    return False


def _mark_leaving(tokens: list[str], mentions: list[_Mention]) -> None:
    for m in mentions:
        after_without = (m.start > 0 and tokens[m.start - 1] == "without") or (
            m.start > 1 and tokens[m.start - 2] == "without" and tokens[m.start - 1] in DETERMINERS
        )
        if after_without or any(_follows(tokens, m.end, cue) for cue in LEAVE_WORDS):
            m.leaving = True


def _attach_accessories(tokens: list[str], mentions: list[_Mention]) -> None:
    """'the girl now wears a hat' → the hat is a component of the girl."""
    for n, m in enumerate(mentions):
        entry = NOUNS.get(m.noun)
        if m.pronoun or entry is None or not entry.accessory or n == 0:
            continue
        owner = next((o for o in reversed(mentions[:n]) if o.pronoun or not NOUNS[o.noun].accessory), None)
        if owner is None:
            continue
        between = tokens[owner.end : m.phrase_start]
        if between == ["with"]:
            m.with_owner = owner
        elif any(w in WEAR_VERBS for w in between) and not any(w in {".", ";", "!", "?"} for w in between):
            m.owner = owner


OBJECT_PRONOUNS = words("him her them its their his themselves himself herself")
TRAILING = words("and the a an with while as when where but or to of at")


def _action(tokens: list[str], start: int, stop: int) -> str:
    kept = []
    for tok in tokens[start:stop]:
        if tok in {".", ";", "!", "?", ","}:
            break
        if not kept and tok in ACTION_SKIP:
            continue
        kept.append(tok)
    while kept and kept[-1] in TRAILING:
        kept.pop()
    return " ".join(kept[:8])


def _relations(tokens: list[str], mentions: list[_Mention]) -> list[tuple[str, str, str | None]]:
    """(subject_id, relation, other_id) from spatial kept around the mentions."""
    found: list[tuple[str, str, str | None]] = []
    placed = [m for m in mentions if m.ids and not m.leaving and m.owner is None]

    def before(k: int) -> _Mention | None:
        return next((m for m in reversed(placed) if m.end <= k and m.pronoun not in PRONOUNS_GROUP), None)

    def after(k: int) -> _Mention | None:
        return next((m for m in placed if m.start > k), None)

    for k, tok in enumerate(tokens):
        nxt = tokens[k + 1] if k + 1 < len(tokens) else ""
        if tok in {"left", "right"}:
            if nxt == "of":
                a, b = before(k), after(k + 1)
                if a and b:
                    found += [(sid, f"{tok}_of", other) for sid in a.ids for other in b.ids if sid != other]
            elif k > 0 and tokens[k - 1] == "the":
                a = before(k) or after(k)
                if a:
                    found += [(sid, tok, None) for sid in a.ids]
        elif tok in {"above", "over", "below", "under", "beneath"}:
            b = after(k)
            a = before(k)
            kind = "above" if tok in {"above", "over"} else "below"
            if b is not None and a is not None and (k == 0 or tokens[k - 1] not in {",", "."}):
                found += [(sid, kind, other) for sid in a.ids for other in b.ids if sid != other]
            elif b is not None:
                c = after(b.end - 1) if b.pronoun else None
                c = next((m for m in placed if m.start > b.end), None)
                if c is not None:
                    found += [(sid, kind, other) for sid in c.ids for other in b.ids if sid != other]
        elif tok in {"middle", "center", "centre"} and k > 0 and tokens[k - 1] == "the":
            a = before(k) or after(k)
            if a:
                found += [(sid, "center", None) for sid in a.ids]
        elif tok in {"riding", "rides", "onto"} or (tok == "on" and nxt in {"top"}):
            a, b = before(k), after(k)
            if a and b:
                found += [(sid, "on", other) for sid in a.ids for other in b.ids if sid != other]
    return found


VERB_CONTEXT = words("who that which also then and")
PRONOUNS_GROUP = frozenset({"they", "them", "their", "themselves"})


def analyze_message(request: SubjectRequest) -> SubjectAnalysis:
    """The offline subject manager."""
    tokens = tokenize(request.message)
    known = {s.id for s in request.memory}
    turn = _Turn(memory=list(request.memory), previous_ids=list(request.previous_ids), taken=set(known))
    mentions = _scan(tokens)
    _mark_leaving(tokens, mentions)
    _attach_accessories(tokens, mentions)
    used: set[str] = set()
    for n, m in enumerate(mentions):
        if m.with_owner is not None and m.with_owner.ids and all(o in turn.new for o in m.with_owner.ids):
            for owner_id in m.with_owner.ids:
                owner = turn.new[owner_id]
                described = f"{owner.description} with {_description(m)}"
                turn.new[owner_id] = owner.model_copy(update={"description": described})
            continue
        if m.with_owner is not None:
            m.owner = m.with_owner
        if m.pronoun:
            m.ids = _resolve_pronoun(m.pronoun, turn, mentions[:n])
        else:
            m.ids = _resolve_noun(m, turn, used)
        if m.owner is not None and not m.owner.ids:
            m.owner = None
        for sid in m.ids:
            used.add(sid)
            if sid not in turn.present and not m.leaving:
                turn.present.append(sid)
    turn.updates = _updates(tokens, mentions, turn)
    leaving = sorted({sid for m in mentions if m.leaving for sid in m.ids} - set(turn.present), key=id_key)
    leaving = [sid for sid in leaving if sid in {s.id for s in request.memory}]
    background = _background(tokens, request.message)
    noun_mentions = [m for m in mentions if not m.leaving and m.ids]
    background_only = not noun_mentions and background is not None and not leaving
    if not noun_mentions and not leaving:
        turn.present = [sid for sid in request.previous_ids if sid in {s.id for s in request.memory}]
    if leaving and not noun_mentions:
        turn.present = [sid for sid in request.previous_ids if sid not in leaving]
    for m in mentions:
        if m.owner is not None:
            for parent in m.owner.ids:
                if parent not in turn.present:
                    turn.present.insert(0, parent)
    turn.present = _cap(turn.present, request.max_subjects)
    actions = _actions(tokens, mentions)
    by_id = {s.id: s for s in request.memory}
    subjects: list[SubjectMention] = []
    for sid in turn.present:
        if sid in turn.new:
            subjects.append(turn.new[sid].model_copy(update={"action": actions.get(sid, "")}))
        else:
            s = by_id[sid]
            subjects.append(
                SubjectMention(
                    id=sid,
                    status="known",
                    name=s.name,
                    description=s.description or s.name,
                    parent_id=s.parent_id,
                    action=actions.get(sid, ""),
                )
            )
    present = set(turn.present)
    relations = [
        Relation(subject_id=a, relation=kind, other_id=b)  # type: ignore[arg-type]
        for a, kind, b in dict.fromkeys(_relations(tokens, mentions))
        if a in present and (b is None or b in present)
    ]
    return SubjectAnalysis(
        caption=request.message.strip() or _fallback_caption(subjects),
        subjects=subjects,
        updates=turn.updates,
        leaving=leaving,
        background=background,
        background_only=background_only,
        relations=relations,
    )


HAIR_LIKE = words("hair eyes beard moustache mustache skin fur feathers")


def _updates(tokens: list[str], mentions: list[_Mention], turn: _Turn) -> list[AttributeUpdate]:
    """'the girl now has short red hair' → a lasting description update of the girl."""
    by_id = {s.id: s for s in turn.memory}
    updates: list[AttributeUpdate] = []
    for m in mentions:
        if len(m.ids) != 1 or m.ids[0] not in by_id or m.owner is not None:
            continue
        k = m.end
        if k < len(tokens) and tokens[k] == "now":
            k += 1
        if k >= len(tokens) or tokens[k] not in {"has", "gets", "got", "wears"} or "now" not in tokens[m.end : k + 1]:
            continue
        change: list[str] = []
        for tok in tokens[k + 1 :]:
            if not tok.isalpha() or tok in {"and", "while", "but"}:
                break
            change.append(tok)
        if change and change[-1] in HAIR_LIKE:
            kept = [w for w in change if w not in {"a", "an", "the"}]
            subject = by_id[m.ids[0]]
            description = f"{subject.description or subject.name} with {' '.join(kept)}"[:500]
            updates.append(AttributeUpdate(id=subject.id, description=description, change=" ".join(change)))
    return updates


def _cap(ids: list[str], limit: int = MAX_SUBJECTS) -> list[str]:
    kept = ids[:limit]
    return [sid for sid in kept if "-" not in sid or sid.split("-")[0] in kept]


def _actions(tokens: list[str], mentions: list[_Mention]) -> dict[str, str]:
    actions: dict[str, str] = {}
    nouns = [m for m in mentions if m.ids and m.owner is None and m.pronoun not in OBJECT_PRONOUNS]
    group: list[_Mention] = []
    for m in nouns:
        starts = sorted(o.phrase_start for o in mentions if o.owner is not m and not o.pronoun)
        stop = next((k for k in starts if k >= m.end), len(tokens))
        text = _action(tokens, m.end, stop)
        group.append(m)
        if text:
            for member in group:
                for sid in member.ids:
                    actions.setdefault(sid, text)
            group = []
    return actions


def _fallback_caption(subjects: list[SubjectMention]) -> str:
    return ", ".join(s.description for s in subjects) or "a scene"
