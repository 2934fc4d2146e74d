"""The one family of expected turn failures.

A `TurnFailure` carries a message fit for the user; the turn service records it as the turn's reason.
Anything else escaping a turn is a bug: logged with its stack and reported as an internal error."""

from __future__ import annotations

from typing import Any

MAX_REASON_CHARS = 500


class TurnFailure(Exception):
    """An expected way for a turn to fail (bad reference, plan the model cannot draw, LLM gave up…)."""

    kind = "failed"

    def __init__(self, message: str, *, info: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.info: dict[str, Any] = dict(info or {})
        """What the turn did before failing (LLM calls, tokens, latencies…); stored on the failed turn."""

    @property
    def reason(self) -> str:
        return clip_reason(str(self))


class PlanError(TurnFailure):
    """A plan (explicit or produced by the agents) that cannot be drawn."""

    kind = "invalid plan"


class DrawError(TurnFailure):
    """A job the drawer refuses, with a message fit for the user (bad reference, too many subjects…)."""

    kind = "draw error"


class DrawCancelled(Exception):
    """Raised by a drawer or engine when its cancel event was set between two steps (not a failure)."""


def clip_reason(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """A failure reason bounded in length: model output pasted into an error must not flood a record."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
