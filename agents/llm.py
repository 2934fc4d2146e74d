"""LLM access through the `openai` client against any OpenAI-compatible endpoint.

Every reply must be one JSON object valid for a pydantic model (and for the caller's own conversion).
Structured output is asked per endpoint in the best mode it has not refused (agents.response_formats:
json_schema → json_object with the schema → json_object). Every request carries `max_tokens`.

- An invalid reply gets ONE repair round that shows the model its (bounded) reply and the error; a second
  invalid reply raises AgentOutputError naming the agent.
- A reply cut at the token limit (`finish_reason == "length"`) is not invalid JSON to repair: it is asked
  once more with the budget doubled up to `max_tokens_cap`, and otherwise raises AgentTruncatedError.
- Retries (tenacity, the openai client's own retries are off): 408, 409, 429, 5xx and refused connections
  are re-sent up to `max_retries` times (Retry-After honoured up to 60 s, else 0.5 s·2ⁿ up to 8 s plus
  jitter). A timeout is NOT re-sent: the server may still be generating the abandoned reply, and a second
  copy would only queue behind it. What still fails raises LLMCallError.
- Each HTTP request is recorded (agent, model, mode, max_tokens, latency, tokens, finish_reason, error);
  an AgentError carries the records of its exchange in `.calls`."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from agents.errors import AgentError, AgentOutputError, AgentTruncatedError, LLMCallError
from agents.planner import CallRecord
from agents.response_formats import (
    EndpointFormats,
    Mode,
    classify,
    error_text,
    response_format,
    strict_schema,
)
from studio.settings import LLMSettings

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

REPAIR_MESSAGE = (
    "Your reply could not be used: {error}\n"
    "Reply again with only the corrected JSON object, following the schema and the rules above."
)
REPAIR_REPLY_CHARS = 1000
"""How much of an invalid reply is shown back to the model in the repair round."""
ERROR_CHARS = 500
RETRY_STATUSES = frozenset({408, 409, 429})
MAX_RETRY_AFTER_S = 60.0
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
"""C0 control characters (and DEL) except tab and newline: dropped from every string of a reply."""


def clip_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()[:10]]
        return "the JSON does not match the schema: " + "; ".join(parts)
    if isinstance(error, json.JSONDecodeError):
        return f"the reply is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    return str(error)


def _without_controls(value: Any) -> Any:
    if isinstance(value, str):
        return _CONTROL.sub("", value)
    if isinstance(value, list):
        return [_without_controls(v) for v in value]
    if isinstance(value, dict):
        return {k: _without_controls(v) for k, v in value.items()}
    return value


def parse_reply(content: str, schema: type[M]) -> M:
    """One JSON object (code fences tolerated; raw control characters inside strings accepted and dropped)."""
    match = _FENCE.match(content)
    text = match.group(1) if match else content
    data = json.loads(text, strict=False)
    if not isinstance(data, dict):
        raise ValueError("the reply must be one JSON object")
    return schema.model_validate(_without_controls(data))


def is_transient(exc: BaseException) -> bool:
    """Worth re-sending: rate limits, lock/request timeouts answered by the server, 5xx that are not a
    refused response_format, refused connections. Never a client-side timeout."""
    if isinstance(exc, openai.APITimeoutError):
        return False
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        return (status in RETRY_STATUSES or status >= 500) and classify(exc) == "other"
    return False


_backoff = wait_exponential_jitter(initial=0.5, max=8.0, jitter=0.25)


def wait_before_retry(state: RetryCallState) -> float:
    """The server's Retry-After (ms or seconds, up to 60 s) when it sent one, else exponential backoff."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if isinstance(exc, openai.APIStatusError):
        headers = exc.response.headers
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            try:
                seconds = float(headers.get(name, "")) * scale
            except ValueError:
                continue
            if 0 < seconds <= MAX_RETRY_AFTER_S:
                return seconds
    return _backoff(state)


@dataclass
class _Exchange:
    """One `complete` call: its agent, model, current token budget and the records of its requests."""

    agent: str
    model: str
    schema: type[BaseModel]
    max_tokens: int
    extended: bool = False
    records: list[CallRecord] = field(default_factory=list)


@dataclass(frozen=True)
class _Reply:
    content: str
    finish_reason: str | None


class LLMClient:
    """One endpoint, shared by the three agents (each may use its own model and token budget)."""

    def __init__(
        self, settings: LLMSettings, client: openai.OpenAI | None = None, formats: EndpointFormats | None = None
    ) -> None:
        if client is None and settings.base_url is None:
            raise ValueError("LLMClient needs settings.llm.base_url (or an openai client)")
        self.settings = settings
        if client is None:
            client = openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key, timeout=settings.timeout_s)
        # retries are decided here (a timeout must not be re-sent), so the client's own are off
        self.client = client.with_options(max_retries=0)
        self.base_url = str(self.client.base_url)
        self.formats = formats or EndpointFormats()

    def model_for(self, agent: str) -> str:
        return getattr(self.settings, f"{agent}_model", None) or self.settings.model

    def max_tokens_for(self, agent: str) -> int:
        return getattr(self.settings, f"{agent}_max_tokens", None) or self.settings.max_tokens

    def complete(
        self,
        agent: str,
        messages: list[dict[str, str]],
        schema: type[M],
        convert: Callable[[M], R] | None = None,
    ) -> tuple[R, list[CallRecord]]:
        """Ask, validate, repair once; return the converted reply and the call records."""
        exchange = _Exchange(agent, self.model_for(agent), schema, self.max_tokens_for(agent))
        try:
            return self._complete(exchange, messages, convert), exchange.records
        except AgentError as exc:
            exc.calls = exchange.records
            raise

    def _complete(self, ex: _Exchange, messages: list[dict[str, str]], convert: Callable[[Any], R] | None) -> R:
        conversation = messages
        for repair in (False, True):
            content = self._answer(ex, conversation, repair=repair)
            try:
                return self._accept(content, ex.schema, convert)
            except ValueError as exc:
                error = clip_text(describe_error(exc), ERROR_CHARS)
                ex.records[-1]["error"] = error
                if repair:
                    raise AgentOutputError(ex.agent, f"invalid reply after one repair round: {error}") from exc
            conversation = [
                *messages,
                {"role": "assistant", "content": clip_text(content, REPAIR_REPLY_CHARS)},
                {"role": "user", "content": REPAIR_MESSAGE.format(error=error)},
            ]
        raise AssertionError("unreachable: the repair round returns or raises")

    @staticmethod
    def _accept(content: str, schema: type[M], convert: Callable[[M], R] | None) -> R:
        reply = parse_reply(content, schema)
        return convert(reply) if convert is not None else reply  # type: ignore[return-value]

    def _answer(self, ex: _Exchange, messages: list[dict[str, str]], repair: bool) -> str:
        """One reply that was not cut at the token limit: a cut reply is asked once more with a larger
        budget (when the cap allows), never repaired."""
        reply = self._request(ex, messages, repair)
        if reply.finish_reason == "length" and not ex.extended:
            larger = min(ex.max_tokens * 2, self.settings.max_tokens_cap)
            if larger > ex.max_tokens:
                ex.extended, ex.max_tokens = True, larger
                reply = self._request(ex, messages, repair)
        if reply.finish_reason == "length":
            raise AgentTruncatedError(
                ex.agent,
                f"the reply was cut at the token limit (max_tokens={ex.max_tokens}, finish_reason 'length'); "
                "raise llm.max_tokens / llm.max_tokens_cap if the model needs more",
            )
        return reply.content

    def _request(self, ex: _Exchange, messages: list[dict[str, str]], repair: bool) -> _Reply:
        """One logical request: sent in the endpoint's best mode, dropping to the next mode when the
        endpoint refuses the response_format, retried while the failure is transient."""
        endpoint = (self.base_url, ex.model)
        mode = self.formats.mode(endpoint)
        while True:
            retrying = Retrying(
                stop=stop_after_attempt(self.settings.max_retries + 1),
                retry=retry_if_exception(is_transient),
                wait=wait_before_retry,
                reraise=True,
            )
            try:
                return retrying(self._send, ex, mode, messages, repair)
            except openai.APITimeoutError as exc:
                raise LLMCallError(
                    ex.agent,
                    f"no reply within {self.settings.timeout_s:g} s (not re-sent: the endpoint may still be "
                    "working on it)",
                ) from exc
            except openai.APIStatusError as exc:
                text = clip_text(error_text(exc), 300)
                rejection = classify(exc)
                if rejection == "format":
                    lower = self.formats.refuse(endpoint, mode, text)
                    if lower is not None:
                        mode = lower
                        continue
                if rejection == "context_overflow":
                    raise LLMCallError(
                        ex.agent, f"the request does not fit the model's context (HTTP {exc.status_code}): {text}"
                    ) from exc
                attempts = retrying.statistics.get("attempt_number", 1)
                raise LLMCallError(
                    ex.agent, f"request failed (HTTP {exc.status_code}, {attempts} attempt(s)): {text}"
                ) from exc
            except openai.APIError as exc:
                attempts = retrying.statistics.get("attempt_number", 1)
                raise LLMCallError(ex.agent, f"request failed ({attempts} attempt(s)): {exc}") from exc

    def _send(self, ex: _Exchange, mode: Mode, messages: list[dict[str, str]], repair: bool) -> _Reply:
        sent = messages
        if mode != "json_schema":
            hint = "Reply with one JSON object that follows this JSON schema:\n" + json.dumps(strict_schema(ex.schema))
            sent = [{"role": "system", "content": f"{messages[0]['content']}\n\n{hint}"}, *messages[1:]]
        record: CallRecord = {
            "agent": ex.agent,
            "model": ex.model,
            "mode": mode,
            "repair": repair,
            "max_tokens": ex.max_tokens,
        }
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=ex.model,
                messages=sent,  # type: ignore[arg-type]
                response_format=response_format(mode, ex.agent, ex.schema),  # type: ignore[arg-type]
                temperature=self.settings.temperature,
                max_tokens=ex.max_tokens,
            )
        except openai.APIError as exc:
            error = f"HTTP {exc.status_code}: {error_text(exc)}" if isinstance(exc, openai.APIStatusError) else str(exc)
            record.update(latency_s=round(time.perf_counter() - started, 6), error=clip_text(error, 300))
            ex.records.append(record)
            raise
        usage = response.usage
        choice = response.choices[0] if response.choices else None
        finish_reason = choice.finish_reason if choice is not None else None
        record.update(
            latency_s=round(time.perf_counter() - started, 6),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
            finish_reason=finish_reason,
        )
        if finish_reason == "length":
            record["error"] = f"cut at the token limit ({ex.max_tokens})"
        ex.records.append(record)
        if choice is None or choice.message is None:
            return _Reply("", finish_reason)
        if getattr(choice.message, "refusal", None):
            return _Reply(f"(refused: {choice.message.refusal})", finish_reason)
        return _Reply(choice.message.content or "", finish_reason)
