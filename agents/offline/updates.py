"""Lasting appearance changes: 'the girl now has short red hair' → an update of the girl's description."""

from __future__ import annotations

from agents.offline.coreference import Resolution
from agents.offline.mentions import Mention
from agents.offline.words import HAIR_LIKE
from agents.schemas import AttributeUpdate


def description_updates(tokens: list[str], mentions: list[Mention], turn: Resolution) -> list[AttributeUpdate]:
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
