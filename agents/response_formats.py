"""How structured output is asked of an endpoint, and what each endpoint turned out to support.

Three modes, tried in this order per endpoint (base URL + model):

- `json_schema`: `{"type": "json_schema", "json_schema": {name, schema, strict: true}}` (OpenAI, vLLM,
  llama.cpp's `llama-server`);
- `json_object_schema`: `{"type": "json_object", "schema": …}` (llama-cpp-python's server, which answers
  json_schema with HTTP 500 but turns a schema sent this way into a grammar);
- `json_object`: plain JSON mode.

The two json_object modes also put the schema into the system prompt. An endpoint drops to the next mode
only when an error names the request format (response_format, json_schema, schema, grammar) with status
400, 422, 500 or 501; an error about the context size never changes the mode."""

from __future__ import annotations

import re
import threading
from functools import cache
from typing import Any, Literal

import openai
from pydantic import BaseModel

Mode = Literal["json_schema", "json_object_schema", "json_object"]
MODES: tuple[Mode, ...] = ("json_schema", "json_object_schema", "json_object")
Rejection = Literal["context_overflow", "format", "other"]

FORMAT_STATUSES = frozenset({400, 422, 500, 501})
_OVERFLOW = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|exceeds? (the )?(available )?context|too many tokens",
    re.IGNORECASE,
)
_FORMAT = re.compile(r"response_format|json_schema|json schema|schema|grammar", re.IGNORECASE)


@cache
def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in OpenAI's strict form, built by the openai package's public helper (the
    same conversion `chat.completions.parse(response_format=model)` sends). Cached per model; read-only."""
    return dict(openai.pydantic_function_tool(model)["function"]["parameters"])


def error_text(exc: openai.APIStatusError) -> str:
    """The server's own error message (OpenAI form `{"error": {"message"}}`, FastAPI `detail`, or text)."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        detail = message or body.get("detail")
        if detail:
            return str(detail)
    return exc.message


def classify(exc: openai.APIStatusError) -> Rejection:
    """Why the endpoint refused a request: the prompt overflowed its context, it cannot take the
    response_format that was sent, or anything else."""
    text = f"{exc.message} {error_text(exc)}"
    if _OVERFLOW.search(text):
        return "context_overflow"
    if exc.status_code in FORMAT_STATUSES and _FORMAT.search(text):
        return "format"
    return "other"


def response_format(mode: Mode, name: str, model: type[BaseModel]) -> dict[str, Any]:
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": strict_schema(model), "strict": True}}
    if mode == "json_object_schema":
        return {"type": "json_object", "schema": strict_schema(model)}
    return {"type": "json_object"}


class EndpointFormats:
    """The best mode each endpoint (base URL, model) has not refused. Thread-safe; one per LLM client."""

    def __init__(self) -> None:
        self._modes: dict[tuple[str, str], Mode] = {}
        self._reasons: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def mode(self, endpoint: tuple[str, str]) -> Mode:
        with self._lock:
            return self._modes.get(endpoint, MODES[0])

    def refuse(self, endpoint: tuple[str, str], mode: Mode, reason: str) -> Mode | None:
        """The endpoint refused `mode`: remember the next mode (never climbing back) and return it, or None
        when no mode is left."""
        later = MODES.index(mode) + 1
        if later >= len(MODES):
            return None
        with self._lock:
            current = self._modes.get(endpoint, MODES[0])
            if MODES.index(current) < later:
                self._modes[endpoint] = MODES[later]
                self._reasons[endpoint] = reason
            return self._modes[endpoint]

    def known(self) -> dict[str, dict[str, str]]:
        """What was learned, for logs and tests: {"<base_url> <model>": {"mode", "reason"}}."""
        with self._lock:
            return {
                f"{url} {model}": {"mode": mode, "reason": self._reasons.get((url, model), "")}
                for (url, model), mode in self._modes.items()
            }
