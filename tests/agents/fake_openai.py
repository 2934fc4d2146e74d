"""A scripted OpenAI-compatible chat-completions endpoint for the agents tests and the graph bench.

It runs in-process on 127.0.0.1 (uvicorn in a thread) or as an httpx2 mock transport. Replies are
queued per agent (recognised from the system prompt); an empty queue falls back to an automatic
responder that answers like a sensible model, built on the offline planner's rules.

It can behave like the real servers the agents were tried against: `refuse` answers a response_format
with an error (LLAMA_CPP_PYTHON: HTTP 500 on json_schema, but a schema inside json_object is followed);
a scripted Reply can carry an error message (CONTEXT_OVERFLOW, llama-server's 400), finish_reason
"length", raw control characters in its text, or a delay."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx2
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agents.offline import analyze_message, offline_layout
from agents.planner import LayoutRequest, SubjectRequest
from agents.schemas import Relation, SubjectAnalysis, SubjectMention
from studio.geometry import Box
from studio.subjects import Subject

LLAMA_CPP_PYTHON = {
    # llama-cpp-python's server: its request model only knows text/json_object, and its error route turns
    # the validation error into a 500
    "json_schema": (
        500,
        "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n"
        "  Input should be 'text' or 'json_object' [type=literal_error, input_value='json_schema']",
    ),
}
JSON_OBJECT_ONLY = {
    "json_schema": (400, "response_format json_schema is not supported"),
    "json_object_schema": (400, "response_format.schema: extra inputs are not permitted"),
}
CONTEXT_OVERFLOW = "the request exceeds the available context size, try increasing it"
"""llama-server's 400 message when prompt + max_tokens do not fit the context."""

AGENT_MARKERS = {
    "You are the subject manager": "subject_manager",
    "You are the layout generator": "layout_generator",
    "You are the supervisor": "supervisor",
}


@dataclass
class Reply:
    content: Any = None
    """A dict (sent as JSON text), a string (sent verbatim) or None (automatic answer)."""
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    """The error message of a non-200 reply (default "scripted <status>")."""
    finish_reason: str = "stop"


def format_of(body: dict[str, Any]) -> str | None:
    """json_schema, json_object_schema (json_object with a schema), json_object, or None."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object" and "schema" in fmt:
        return "json_object_schema"
    return fmt.get("type")


def request_payload(body: dict[str, Any]) -> dict[str, Any]:
    """The request's JSON payload: the last user message that is a JSON object (a repair round ends with
    the repair instruction, after the original payload and the bad reply)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            try:
                data = json.loads(message.get("content", ""))
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return {}


def agent_of(body: dict[str, Any]) -> str:
    system = next((m.get("content", "") for m in body.get("messages", []) if m.get("role") == "system"), "")
    for marker, agent in AGENT_MARKERS.items():
        if marker in system:
            return agent
    return "unknown"


def auto_reply(agent: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A valid answer computed from the request payload with the offline rules."""
    if agent == "subject_manager":
        memory = [Subject(**m) for m in payload["memory"]]
        request = SubjectRequest(
            message=payload["message"], turn_index=0, memory=memory, previous_ids=payload["previous_picture"]
        )
        return analyze_message(request).model_dump(mode="json")
    if agent == "layout_generator":
        analysis = SubjectAnalysis(
            caption=payload["caption"],
            subjects=[SubjectMention(status="known", **s) for s in payload["subjects"]],
            updates=[],
            leaving=[],
            background=payload["background"],
            background_only=False,
            relations=[Relation(**r) for r in payload["relations"]],
        )
        canvas = payload["canvas"]
        boxes = {sid: Box(x=b[0], y=b[1], w=b[2], h=b[3]) for sid, b in payload["previous_boxes"].items()}
        draft = offline_layout(
            LayoutRequest(
                analysis=analysis, memory=[], height=canvas["height"], width=canvas["width"], previous_boxes=boxes
            )
        )
        items = [
            {"subject_id": i.subject_id, "phrase": i.phrase, "x": i.box.x, "y": i.box.y, "w": i.box.w, "h": i.box.h}
            for i in draft.plan.items
        ]
        return {"background": draft.plan.background, "negative": draft.plan.negative or "", "items": items}
    return {"approve": True, "feedback": ""}


class FakeOpenAI:
    def __init__(self) -> None:
        self.queues: dict[str, list[Reply]] = defaultdict(list)
        self.requests: list[dict[str, Any]] = []
        self.refuse: dict[str, tuple[int, str]] = {}
        """format (see format_of) → (status, message) answered instead of a completion."""
        self.refuse_models: set[str] | None = None
        """the models `refuse` applies to (None: all)."""
        self._lock = threading.Lock()

    def push(self, agent: str, *replies: Reply | dict[str, Any] | str) -> None:
        with self._lock:
            self.queues[agent] += [r if isinstance(r, Reply) else Reply(content=r) for r in replies]

    def count(self, agent: str | None = None) -> int:
        return sum(1 for r in self.requests if agent is None or r["agent"] == agent)

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str], float]:
        agent = agent_of(body)
        fmt = format_of(body)
        with self._lock:
            self.requests.append({"agent": agent, "format": fmt, "body": body})
            if fmt in self.refuse and (self.refuse_models is None or body.get("model") in self.refuse_models):
                status, message = self.refuse[fmt]
                return status, {"error": {"message": message, "type": "invalid_request_error"}}, {}, 0.0
            reply = self.queues[agent].pop(0) if self.queues[agent] else Reply()
        if reply.status != 200:
            error = {"error": {"message": reply.error or f"scripted {reply.status}", "type": "scripted"}}
            return reply.status, error, reply.headers, reply.delay
        content = reply.content
        if content is None:
            payload = request_payload(body)
            content = auto_reply(agent, payload)
        text = content if isinstance(content, str) else json.dumps(content)
        completion = {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake"),
            "choices": [
                {"index": 0, "finish_reason": reply.finish_reason, "message": {"role": "assistant", "content": text}}
            ],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }
        return 200, completion, reply.headers, reply.delay

    # --- transports -------------------------------------------------------------------------------

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> JSONResponse:
            status, data, headers, delay = self.answer(await request.json())
            if delay:
                await asyncio.sleep(delay)
            return JSONResponse(data, status_code=status, headers=headers)

        return app

    def mock_transport(self) -> httpx2.MockTransport:
        def handler(request: httpx2.Request) -> httpx2.Response:
            status, data, headers, _ = self.answer(json.loads(request.content))
            return httpx2.Response(status, json=data, headers=headers)

        return httpx2.MockTransport(handler)


class ServerThread:
    """uvicorn serving a FakeOpenAI on a free loopback port."""

    def __init__(self, fake: FakeOpenAI) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(fake.app(), log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        self.sock.close()
