"""The agents' failures: an agent that cannot produce a usable answer is an expected turn failure
(`studio.failures.TurnFailure`), reported as "planning failed: <agent>: …". Kept apart from agents/llm.py so
that code which only handles these errors (the engine) does not import the openai client."""

from __future__ import annotations

from agents.planner import CallRecord
from studio.failures import TurnFailure, clip_reason


class AgentError(TurnFailure):
    """An agent could not produce a usable answer; the message starts with the agent's name."""

    kind = "planning failed"

    def __init__(self, agent: str, message: str, *, calls: list[CallRecord] | None = None) -> None:
        super().__init__(clip_reason(f"{agent}: {message}"))
        self.agent = agent
        self.calls: list[CallRecord] = list(calls or [])
        """The HTTP requests of the failed exchange (they never reach a checkpoint)."""

    @property
    def reason(self) -> str:
        return clip_reason(f"{self.kind}: {self}")


class AgentOutputError(AgentError):
    """The model's reply was still invalid after the repair round."""


class AgentTruncatedError(AgentOutputError):
    """The model's reply was cut at the token limit (finish_reason 'length'), even with the larger budget."""


class LLMCallError(AgentError):
    """The endpoint failed (after the retries), timed out, or refused the request."""
