"""Components and possessions: an accessory after 'wears / holds / carries …' becomes a component of its
owner ('the girl now wears a hat' → '1-1'); 'a girl with a red scarf' ties the scarf to the girl (a new
girl folds it into her description, a known one gets the component). A possessive ('the wizard's staff',
'her hat') names the owner: an owned accessory is the owner's component, and the owner is in the picture."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import POSSESSIVE_MARK, POSSESSIVE_PRONOUNS, SENTENCE_END, WEAR_VERBS
from agents.vocabulary import NOUNS


def attach_possessions(tokens: list[str], mentions: list[Mention]) -> None:
    """Set `possessor` of every noun phrase written after "X's" or after his/her/its/their."""
    for n, m in enumerate(mentions):
        if m.pronoun:
            continue
        if m.phrase_start > 0 and tokens[m.phrase_start - 1] == POSSESSIVE_MARK:
            m.possessor = next(
                (o for o in reversed(mentions[:n]) if o.end == m.phrase_start - 1 and not o.pronoun), None
            )
        elif tokens[m.phrase_start] in POSSESSIVE_PRONOUNS:
            m.possessor = next((o for o in mentions[:n] if o.pronoun and o.start == m.phrase_start), None)


def attach_accessories(tokens: list[str], mentions: list[Mention]) -> None:
    """Set `owner` (worn, held or possessed) or `with_owner` ('X with a Y') of every accessory mention."""
    for n, m in enumerate(mentions):
        entry = NOUNS.get(m.noun)
        if m.pronoun or entry is None or not entry.accessory or n == 0:
            continue
        if m.possessor is not None:
            m.owner = m.possessor
            continue
        owner = next((o for o in reversed(mentions[:n]) if o.pronoun or not _is_accessory(o)), None)
        if owner is None:
            continue
        between = tokens[owner.end : m.phrase_start]
        if any(w in SENTENCE_END for w in between):
            continue
        if between == ["with"]:
            m.with_owner = owner
        elif any(w in WEAR_VERBS for w in between) or between[-1:] == ["with"]:
            m.owner = owner


def _is_accessory(mention: Mention) -> bool:
    entry = NOUNS.get(mention.noun)
    return entry is not None and entry.accessory
