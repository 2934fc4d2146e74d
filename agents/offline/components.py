"""Components and possessions: an accessory after 'wears / holds / carries …' becomes a component of its
owner ('the girl now wears a hat' → '1-1'); 'a girl with a red scarf' ties the scarf to the girl (a new
girl folds it into her description, a known one gets the component)."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import SENTENCE_END, WEAR_VERBS
from agents.vocabulary import NOUNS


def attach_accessories(tokens: list[str], mentions: list[Mention]) -> None:
    """Set `owner` (worn/held) or `with_owner` ('X with a Y') of every accessory mention."""
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
        elif any(w in WEAR_VERBS for w in between) and not any(w in SENTENCE_END for w in between):
            m.owner = owner
