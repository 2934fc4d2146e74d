"""LLM access through the `openai` client against any OpenAI-compatible endpoint.

Every reply must be one JSON object valid for a pydantic model (and for the caller's own conversion).
The request asks for structured output (`response_format` json_schema, strict); a server that rejects
json_schema is asked again with json_object and the schema in the system prompt, and is remembered as
such. An invalid reply gets ONE repair round that shows the model its error; a second invalid reply raises
AgentOutputError naming the agent. Timeouts, connection errors, 408/409/429 and 5xx are retried by the
openai client itself (`max_retries`, exponential backoff from 0.5 s up to 8 s, honouring Retry-After);
what still fails raises LLMCallError. Each request is recorded: agent, model, mode, latency, tokens."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any, TypeVar

import openai
from pydantic import BaseModel, ValidationError

from agents.planner import CallRecord
from studio.failures import TurnFailure
from studio.settings import LLMSettings

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")

REPAIR_MESSAGE = (
    "Your reply could not be used: {error}\n"
    "Reply again with only the corrected JSON object, following the schema and the rules above."
)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class AgentError(TurnFailure):
    """An agent could not produce a usable answer; the message starts with the agent's name."""

    kind = "planning failed"

    def __init__(self, agent: str, message: str) -> None:
        super().__init__(f"{agent}: {message}")
        self.agent = agent


class AgentOutputError(AgentError):
    """The model's reply was still invalid after the repair round."""


class LLMCallError(AgentError):
    """The endpoint failed (after the client's retries), timed out or refused the request."""


@cache
def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in OpenAI's strict form: every property required, no extra keys, no defaults.
    Cached per model (building it costs milliseconds); treat the result as read-only."""
    schema = model.model_json_schema()

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            node.pop("title", None)
            node.pop("default", None)
            if node.get("type") == "object" and isinstance(node.get("properties"), dict):
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
                for value in node["properties"].values():
                    visit(value)
            for key, value in node.items():
                if key != "properties":
                    visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def describe_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()[:10]]
        return "the JSON does not match the schema: " + "; ".join(parts)
    if isinstance(error, json.JSONDecodeError):
        return f"the reply is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    return str(error)


def parse_reply(content: str, schema: type[M]) -> M:
    match = _FENCE.match(content)
    text = match.group(1) if match else content
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("the reply must be one JSON object")
    return schema.model_validate(data)


class LLMClient:
    """One endpoint, shared by the three agents (each may use its own model)."""

    def __init__(self, settings: LLMSettings, client: openai.OpenAI | None = None) -> None:
        if client is None and settings.base_url is None:
            raise ValueError("LLMClient needs settings.llm.base_url (or an openai client)")
        self.settings = settings
        self.client = client or openai.OpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key,
            timeout=settings.timeout_s,
            max_retries=settings.max_retries,
        )
        self._json_schema_supported: bool | None = None
        self._lock = threading.Lock()

    def model_for(self, agent: str) -> str:
        return getattr(self.settings, f"{agent}_model", None) or self.settings.model

    def complete(
        self,
        agent: str,
        messages: list[dict[str, str]],
        schema: type[M],
        convert: Callable[[M], R] | None = None,
    ) -> tuple[R, list[CallRecord]]:
        """Ask, validate, repair once; return the converted reply and the call records."""
        records: list[CallRecord] = []
        content = self._request(agent, messages, schema, records, repair=False)
        try:
            return self._accept(content, schema, convert), records
        except ValueError as exc:
            first_error = describe_error(exc)
            records[-1]["error"] = first_error
        repair = [
            *messages,
            {"role": "assistant", "content": content},
            {"role": "user", "content": REPAIR_MESSAGE.format(error=first_error)},
        ]
        content = self._request(agent, repair, schema, records, repair=True)
        try:
            return self._accept(content, schema, convert), records
        except ValueError as exc:
            error = describe_error(exc)
            records[-1]["error"] = error
            raise AgentOutputError(agent, f"invalid reply after one repair round: {error}") from exc

    @staticmethod
    def _accept(content: str, schema: type[M], convert: Callable[[M], R] | None) -> R:
        reply = parse_reply(content, schema)
        return convert(reply) if convert is not None else reply  # type: ignore[return-value]

    def _request(
        self, agent: str, messages: list[dict[str, str]], schema: type[M], records: list[CallRecord], repair: bool
    ) -> str:
        model = self.model_for(agent)
        mode = "json_object" if self._json_schema_supported is False else "json_schema"
        try:
            return self._send(agent, model, mode, messages, schema, records, repair)
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            if mode != "json_schema":
                raise LLMCallError(agent, f"request rejected by the endpoint: {exc}") from exc
            with self._lock:
                self._json_schema_supported = False
        try:
            return self._send(agent, model, "json_object", messages, schema, records, repair)
        except openai.APIError as exc:
            raise LLMCallError(agent, f"request failed: {exc}") from exc

    def _send(
        self,
        agent: str,
        model: str,
        mode: str,
        messages: list[dict[str, str]],
        schema: type[M],
        records: list[CallRecord],
        repair: bool,
    ) -> str:
        if mode == "json_schema":
            response_format: dict[str, Any] = {
                "type": "json_schema",
                "json_schema": {"name": agent, "schema": strict_schema(schema), "strict": True},
            }
            sent = messages
        else:
            response_format = {"type": "json_object"}
            hint = "Reply with one JSON object that follows this JSON schema:\n" + json.dumps(strict_schema(schema))
            sent = [{"role": "system", "content": f"{messages[0]['content']}\n\n{hint}"}, *messages[1:]]
        record: CallRecord = {"agent": agent, "model": model, "mode": mode, "repair": repair}
        started = time.perf_counter()
        try:
            response = self.client.chat.completions.create(
                model=model,
                messages=sent,  # type: ignore[arg-type]
                response_format=response_format,  # type: ignore[arg-type]
                temperature=self.settings.temperature,
            )
        except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
            records.append({**record, "latency_s": time.perf_counter() - started, "error": str(exc)})
            raise
        except openai.APIError as exc:
            records.append({**record, "latency_s": time.perf_counter() - started, "error": str(exc)})
            raise LLMCallError(agent, f"request failed after {self.settings.max_retries} retries: {exc}") from exc
        usage = response.usage
        record.update(
            latency_s=round(time.perf_counter() - started, 6),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
        )
        records.append(record)
        if mode == "json_schema" and self._json_schema_supported is None:
            with self._lock:
                self._json_schema_supported = True
        choice = response.choices[0] if response.choices else None
        if choice is None or choice.message is None:
            return ""
        if getattr(choice.message, "refusal", None):
            return f"(refused: {choice.message.refusal})"
        return choice.message.content or ""
