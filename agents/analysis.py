"""Validation of a subject analysis against the memory, and the memory it implies before drawing."""

from __future__ import annotations

from agents.schemas import PAIRWISE_RELATIONS, SubjectAnalysis
from studio.subjects import Subject, id_key, next_component_id, next_mother_id, parent_of, validate_subject_id


def check_analysis(analysis: SubjectAnalysis, memory: list[Subject], max_subjects: int | None = None) -> None:
    """Raise ValueError naming every inconsistency of `analysis` with `memory`:
    known ids must exist, new ids must be the next free integers (components: next free "k-j" of an
    existing or new mother present in the turn), ids unique, updates and departures about known subjects."""
    known = {subject.id for subject in memory}
    taken = set(known)
    errors: list[str] = []
    seen: set[str] = set()
    present: set[str] = {mention.id for mention in analysis.subjects}
    for mention in analysis.subjects:
        try:
            validate_subject_id(mention.id)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        if mention.id in seen:
            errors.append(f"subject {mention.id!r} is listed twice")
        seen.add(mention.id)
        parent = parent_of(mention.id)
        if mention.parent_id != parent:
            errors.append(f"subject {mention.id!r} must have parent_id {parent!r}, got {mention.parent_id!r}")
        if parent is not None and parent not in present:
            errors.append(f"component {mention.id!r} needs its mother {parent!r} among this turn's subjects")
        if not mention.name.strip():
            errors.append(f"subject {mention.id!r} has an empty name")
        if mention.status == "known":
            if mention.id not in known:
                errors.append(f"subject {mention.id!r} is marked known but is not in memory (known: {sorted(known)})")
        else:
            if mention.id in known:
                errors.append(f"subject {mention.id!r} is marked new but already exists in memory")
                continue
            expected = next_mother_id(taken) if parent is None else next_component_id(parent, taken)
            if mention.id != expected:
                errors.append(
                    f"new subject {mention.name!r} must get the next free id {expected!r}, got {mention.id!r}"
                )
            taken.add(mention.id)
    for update in analysis.updates:
        if update.id not in known and update.id not in present:
            errors.append(f"update names unknown subject {update.id!r}")
    for subject_id in analysis.leaving:
        if subject_id not in known:
            errors.append(f"leaving names unknown subject {subject_id!r}")
        elif subject_id in present:
            errors.append(f"subject {subject_id!r} cannot both leave and be shown")
    for relation in analysis.relations:
        if relation.subject_id not in present:
            errors.append(f"relation names subject {relation.subject_id!r} that is not shown in this turn")
        if relation.relation in PAIRWISE_RELATIONS and relation.other_id not in present:
            errors.append(f"relation {relation.relation!r} of {relation.subject_id!r} needs another shown subject")
    if max_subjects is not None and len(analysis.subjects) > max_subjects:
        errors.append(f"{len(analysis.subjects)} subjects in one picture; at most {max_subjects} can be drawn")
    if errors:
        raise ValueError("; ".join(errors))


def memory_before_draw(memory: list[Subject], analysis: SubjectAnalysis, turn_index: int) -> list[Subject]:
    """Memory plus this turn's new subjects and explicit appearance updates (references are untouched)."""
    by_id = {subject.id: subject for subject in memory}
    for mention in analysis.subjects:
        if mention.id not in by_id:
            by_id[mention.id] = Subject(
                id=mention.id,
                name=mention.name.strip()[:100],
                description=(mention.description or mention.name).strip()[:500],
                first_seen_turn=turn_index,
            )
    for update in analysis.updates:
        if update.id in by_id:
            by_id[update.id] = by_id[update.id].model_copy(update={"description": update.description.strip()[:500]})
    return sorted(by_id.values(), key=lambda s: id_key(s.id))
