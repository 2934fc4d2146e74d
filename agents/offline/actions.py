"""Actions: the words after a subject up to the next subject ('fluttering above the lion'), shared by the
subjects named together before them ('the girl and the boy dance')."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import ACTION_SKIP, OBJECT_PRONOUNS, TRAILING


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


def actions(tokens: list[str], mentions: list[Mention]) -> dict[str, str]:
    """The action of every subject id that has one."""
    found: dict[str, str] = {}
    nouns = [m for m in mentions if m.ids and m.owner is None and m.pronoun not in OBJECT_PRONOUNS]
    group: list[Mention] = []
    for m in nouns:
        starts = sorted(o.phrase_start for o in mentions if o.owner is not m and not o.pronoun)
        stop = next((k for k in starts if k >= m.end), len(tokens))
        text = _action(tokens, m.end, stop)
        group.append(m)
        if text:
            for member in group:
                for sid in member.ids:
                    found.setdefault(sid, text)
            group = []
    return found
