"""The offline subject manager: a message and the memory → a SubjectAnalysis, by rules, in steps
(mentions → departures → possessions and components → scenery → coreference → updates → scene → relations
→ actions)."""

from __future__ import annotations

import re

from agents.offline.actions import actions
from agents.offline.components import attach_accessories, attach_possessions
from agents.offline.coreference import Resolution, description, resolve_anaphor, resolve_noun, resolve_pronoun
from agents.offline.departures import mark_leaving
from agents.offline.mentions import Mention, scan, tokenize
from agents.offline.relations import relations
from agents.offline.scene import background
from agents.offline.scenery import mark_scenery
from agents.offline.updates import description_updates
from agents.offline.words import CLAUSE_END, MAX_SUBJECTS
from agents.planner import SubjectRequest
from agents.schemas import Relation, SubjectAnalysis, SubjectMention
from studio.subjects import Subject, id_key, parent_of


def analyze_message(request: SubjectRequest) -> SubjectAnalysis:
    """The offline subject manager."""
    tokens = tokenize(request.message)
    known = {s.id for s in request.memory}
    turn = Resolution(memory=list(request.memory), previous_ids=list(request.previous_ids), taken=set(known))
    mentions = scan(tokens, known_names(request.memory))
    mark_leaving(tokens, mentions)
    attach_possessions(tokens, mentions)
    attach_accessories(tokens, mentions)
    mark_scenery(tokens, mentions)
    _resolve(tokens, mentions, turn)
    turn.updates = description_updates(tokens, mentions, turn)
    leaving = sorted({sid for m in mentions if m.leaving for sid in m.ids} - set(turn.present), key=id_key)
    leaving = [sid for sid in leaving if sid in {s.id for s in request.memory}]
    scene = background(tokens, request.message, request.previous_background)
    noun_mentions = [m for m in mentions if not m.leaving and m.ids]
    background_only = not noun_mentions and scene is not None and not leaving
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
    leaving = [sid for sid in leaving if sid not in turn.present]  # an owner shown with its component stays
    subjects = _shown(turn, request, actions(tokens, mentions))
    present = set(turn.present)
    found = [
        Relation(subject_id=a, relation=kind, other_id=b)  # type: ignore[arg-type]
        for a, kind, b in dict.fromkeys(relations(tokens, mentions))
        if a in present and (b is None or b in present)
    ]
    return SubjectAnalysis(
        caption=request.message.strip() or _fallback_caption(subjects),
        subjects=subjects,
        updates=turn.updates,
        leaving=leaving,
        background=scene,
        background_only=background_only,
        relations=found,
    )


_NAMED = re.compile(r"\b(?:named|called) ([A-Za-z]+)")


def known_names(memory: list[Subject]) -> dict[str, tuple[str, str]]:
    """The names given in memory ('a girl named Anna'): lower-case name → (id, noun)."""
    found: dict[str, tuple[str, str]] = {}
    for subject in memory:
        for name in _NAMED.findall(subject.description or ""):
            found.setdefault(name.lower(), (subject.id, subject.name))
    return found


def _clause_start(tokens: list[str], k: int) -> int:
    return next((j + 1 for j in range(k - 1, -1, -1) if tokens[j] in CLAUSE_END), 0)


def _resolve(tokens: list[str], mentions: list[Mention], turn: Resolution) -> None:
    """Give every mention its ids (an accessory 'with' a new subject is folded into its description)."""
    used: set[str] = set()
    for n, m in enumerate(mentions):
        if m.with_owner is not None and m.with_owner.ids and all(o in turn.new for o in m.with_owner.ids):
            for owner_id in m.with_owner.ids:
                owner = turn.new[owner_id]
                described = f"{owner.description} with {description(m)}"
                turn.new[owner_id] = owner.model_copy(update={"description": described})
            continue
        if m.with_owner is not None:
            m.owner = m.with_owner
        if m.pronoun:
            start = _clause_start(tokens, m.start)
            clause = [o for o in mentions[:n] if o.start >= start]
            owns = any(o.possessor is m for o in mentions)
            m.ids = resolve_pronoun(m.pronoun, turn, mentions[:n], clause, owns)
        elif m.anaphor:
            m.ids = resolve_anaphor(m, turn, mentions[:n], used)
        else:
            m.ids = resolve_noun(m, turn, used)
        if m.owner is not None and not m.owner.ids:
            m.owner = None
        for sid in m.ids:
            used.add(sid)
            if sid not in turn.present and not m.leaving:
                turn.present.append(sid)


def _shown(turn: Resolution, request: SubjectRequest, acts: dict[str, str]) -> list[SubjectMention]:
    """The subjects of the picture, new ones as created and known ones from memory, with their actions."""
    by_id = {s.id: s for s in request.memory}
    subjects: list[SubjectMention] = []
    for sid in turn.present:
        if sid in turn.new:
            subjects.append(turn.new[sid].model_copy(update={"action": acts.get(sid, "")}))
        else:
            s = by_id[sid]
            subjects.append(
                SubjectMention(
                    id=sid,
                    status="known",
                    name=s.name,
                    description=s.description or s.name,
                    parent_id=s.parent_id,
                    action=acts.get(sid, ""),
                )
            )
    return subjects


def _cap(ids: list[str], limit: int = MAX_SUBJECTS) -> list[str]:
    kept = ids[:limit]
    return [sid for sid in kept if (parent := parent_of(sid)) is None or parent in kept]


def _fallback_caption(subjects: list[SubjectMention]) -> str:
    return ", ".join(s.description for s in subjects) or "a scene"
