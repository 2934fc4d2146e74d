"""Departures: a subject followed by 'leaves', 'has left', 'goes away', 'is no longer' …, or after 'without'."""

from __future__ import annotations

from agents.offline.mentions import Mention
from agents.offline.words import DETERMINERS, LEAVE_WORDS, SENTENCE_END


def _follows(tokens: list[str], end: int, cue: tuple[str, ...], window: int = 4) -> bool:
    """Whether `cue` starts within `window` tokens after `end`, in the same sentence."""
    for k in range(end, min(end + window, len(tokens))):
        if tuple(tokens[k : k + len(cue)]) == cue:
            return True
        if tokens[k] in SENTENCE_END:
            return False
    return False


def mark_leaving(tokens: list[str], mentions: list[Mention]) -> None:
    for m in mentions:
        after_without = (m.start > 0 and tokens[m.start - 1] == "without") or (
            m.start > 1 and tokens[m.start - 2] == "without" and tokens[m.start - 1] in DETERMINERS
        )
        if after_without or any(_follows(tokens, m.end, cue) for cue in LEAVE_WORDS):
            m.leaving = True
