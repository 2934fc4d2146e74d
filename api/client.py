"""Python client SDK. Needs only httpx and pydantic (plus the schema modules of `studio`).

from api.client import StudioClient
with StudioClient("http://127.0.0.1:8000", api_key="sk-studio-…") as client:
    session = client.create_session(height=512, width=768)
    turn = client.chat(session.id, "a girl and a boy walk to school")
    png = client.get_image(turn.image_id)
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import TypeAdapter

from studio.draw import DrawSettings
from studio.plan import TurnPlan
from studio.turns import Session, SessionCreate, SubjectView, Turn, TurnEvent

RETRY_STATUSES = {429, 503}


class StudioError(Exception):
    """An error answer of the service; `status` is the HTTP status, `detail` the body's `detail`: a message,
    or for 422 a list of `{loc, msg, type}` problems (see api/errors.py)."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {_describe(detail)}")
        self.status = status
        self.detail = detail


def _describe(detail: Any) -> str:
    """'body.settings.steps: Input should be …; …' for a 422 list; anything else as text."""
    if isinstance(detail, list) and all(isinstance(item, dict) and "msg" in item for item in detail):
        return "; ".join(".".join(str(part) for part in item.get("loc", [])) + f": {item['msg']}" for item in detail)
    return str(detail)


class AuthenticationError(StudioError):
    pass


class NotFoundError(StudioError):
    pass


class InvalidRequestError(StudioError):
    pass


class RateLimitedError(StudioError):
    pass


class TurnFailedError(Exception):
    def __init__(self, turn: Turn) -> None:
        super().__init__(f"turn {turn.index} of session {turn.session_id} failed: {turn.error}")
        self.turn = turn


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    kind = {401: AuthenticationError, 404: NotFoundError, 422: InvalidRequestError, 429: RateLimitedError}.get(
        response.status_code, InvalidRequestError if response.status_code < 500 else StudioError
    )
    raise kind(response.status_code, detail)


@dataclass
class _Call:
    """One API call described independently of sync/async transport."""

    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    files: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    parse: Any = None  # a pydantic model / TypeAdapter target, "bytes", or None


def _parse(call: _Call, response: httpx.Response) -> Any:
    if call.parse is None:
        return None
    if call.parse == "bytes":
        return response.content
    return TypeAdapter(call.parse).validate_python(response.json())


def _backoff(attempt: int, response: httpx.Response | None) -> float:
    if response is not None and (retry_after := response.headers.get("Retry-After")):
        try:
            return min(float(retry_after), 30.0)
        except ValueError:
            pass
    return min(0.25 * 2**attempt, 8.0) * (0.5 + random.random() / 2)


def _turn_request(message: str | None, plan: TurnPlan | dict | None, settings: DrawSettings | None) -> dict[str, Any]:
    """A plan given as a dict is sent as-is: the server, whose limits apply, validates it."""
    body: dict[str, Any] = {}
    if message is not None:
        body["message"] = message
    if plan is not None:
        body["plan"] = plan if isinstance(plan, dict) else plan.model_dump(mode="json")
    if settings is not None:
        body["settings"] = settings.model_dump(mode="json")
    return body


class _Calls:
    """The endpoint catalogue, shared by both clients."""

    @staticmethod
    def create_session(title: str, height: int, width: int, settings: DrawSettings | None) -> _Call:
        body = SessionCreate(title=title, height=height, width=width, settings=settings or DrawSettings())
        return _Call("POST", "/v1/sessions", json=body.model_dump(mode="json"), parse=Session)

    @staticmethod
    def post_turn(
        session_id: str,
        message: str | None,
        plan: TurnPlan | dict | None,
        settings: DrawSettings | None,
        idempotency_key: str | None,
    ) -> _Call:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _Call(
            "POST",
            f"/v1/sessions/{session_id}/turns",
            json=_turn_request(message, plan, settings),
            headers=headers,
            parse=Turn,
        )

    @staticmethod
    def upload_reference(session_id: str, name: str, image: bytes, description: str, subject_id: str | None) -> _Call:
        data = {"name": name, "description": description}
        if subject_id is not None:
            data["subject_id"] = subject_id
        return _Call(
            "POST",
            f"/v1/sessions/{session_id}/subjects",
            files={"file": ("reference", image, "application/octet-stream")},
            data=data,
            parse=SubjectView,
        )


class _SSEParser:
    """Incremental Server-Sent Events parser: feed lines, get a TurnEvent at each blank line."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> TurnEvent | None:
        if line == "":
            data, self._data = self._data, []
            return TurnEvent.model_validate(json.loads("\n".join(data))) if data else None
        if line.startswith("data:"):
            self._data.append(line[5:].lstrip())
        return None


class StudioClient:
    """Synchronous client. Retries 429/503 with exponential backoff (honouring Retry-After)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.max_retries = max_retries

    def __enter__(self) -> StudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _do(self, call: _Call) -> Any:
        for attempt in range(self.max_retries + 1):
            response = self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=call.headers,
                files=call.files,
                data=call.data,
            )
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                time.sleep(_backoff(attempt, response))
                continue
            _raise_for(response)
            return _parse(call, response)
        raise AssertionError("unreachable")

    # sessions
    def create_session(
        self, title: str = "", height: int = 512, width: int = 512, settings: DrawSettings | None = None
    ) -> Session:
        return self._do(_Calls.create_session(title, height, width, settings))

    def list_sessions(self, limit: int = 100, offset: int = 0) -> list[Session]:
        return self._do(_Call("GET", "/v1/sessions", params={"limit": limit, "offset": offset}, parse=list[Session]))

    def get_session(self, session_id: str) -> Session:
        return self._do(_Call("GET", f"/v1/sessions/{session_id}", parse=Session))

    def delete_session(self, session_id: str) -> None:
        self._do(_Call("DELETE", f"/v1/sessions/{session_id}"))

    # turns
    def post_turn(
        self,
        session_id: str,
        message: str | None = None,
        plan: TurnPlan | dict | None = None,
        settings: DrawSettings | None = None,
        idempotency_key: str | None = None,
    ) -> Turn:
        return self._do(_Calls.post_turn(session_id, message, plan, settings, idempotency_key))

    def get_turn(self, session_id: str, index: int) -> Turn:
        return self._do(_Call("GET", f"/v1/sessions/{session_id}/turns/{index}", parse=Turn))

    def list_turns(self, session_id: str) -> list[Turn]:
        return self._do(_Call("GET", f"/v1/sessions/{session_id}/turns", parse=list[Turn]))

    def cancel_turn(self, session_id: str, index: int) -> Turn:
        return self._do(_Call("POST", f"/v1/sessions/{session_id}/turns/{index}/cancel", parse=Turn))

    def events(self, session_id: str, after: int = 0, timeout: float | None = None) -> Iterator[TurnEvent]:
        """Follow the session's event stream (replays stored events after `after` first)."""
        with self._http.stream(
            "GET", f"/v1/sessions/{session_id}/events", params={"after": after}, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for(response)
            parser = _SSEParser()
            for line in response.iter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event

    def wait(self, turn: Turn, timeout: float = 600.0) -> Turn:
        """Follow events until `turn` is done or failed; return it (raise TurnFailedError if it failed)."""
        current = self.get_turn(turn.session_id, turn.index)
        if not current.status.finished:
            for event in self.events(turn.session_id, timeout=timeout):
                if event.turn_id == turn.id and event.type in ("done", "failed"):
                    break
            current = self.get_turn(turn.session_id, turn.index)
        if current.status == "failed":
            raise TurnFailedError(current)
        return current

    def chat(self, session_id: str, message: str, idempotency_key: str | None = None, timeout: float = 600.0) -> Turn:
        """Post a chat message and wait for its image."""
        return self.wait(self.post_turn(session_id, message=message, idempotency_key=idempotency_key), timeout)

    def draw_plan(self, session_id: str, plan: TurnPlan | dict, timeout: float = 600.0) -> Turn:
        return self.wait(self.post_turn(session_id, plan=plan), timeout)

    # subjects and images
    def upload_reference(
        self, session_id: str, name: str, image: bytes, description: str = "", subject_id: str | None = None
    ) -> SubjectView:
        return self._do(_Calls.upload_reference(session_id, name, image, description, subject_id))

    def list_subjects(self, session_id: str) -> list[SubjectView]:
        return self._do(_Call("GET", f"/v1/sessions/{session_id}/subjects", parse=list[SubjectView]))

    def get_image(self, image_id_or_url: str) -> bytes:
        return self._do(_Call("GET", _image_path(image_id_or_url), parse="bytes"))

    def health(self) -> dict[str, Any]:
        return self._do(_Call("GET", "/healthz", parse=dict[str, Any]))


class AsyncStudioClient:
    """The same API for asyncio."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.max_retries = max_retries

    async def __aenter__(self) -> AsyncStudioClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _do(self, call: _Call) -> Any:
        for attempt in range(self.max_retries + 1):
            response = await self._http.request(
                call.method,
                call.path,
                json=call.json,
                params=call.params,
                headers=call.headers,
                files=call.files,
                data=call.data,
            )
            if response.status_code in RETRY_STATUSES and attempt < self.max_retries:
                await asyncio.sleep(_backoff(attempt, response))
                continue
            _raise_for(response)
            return _parse(call, response)
        raise AssertionError("unreachable")

    async def create_session(
        self, title: str = "", height: int = 512, width: int = 512, settings: DrawSettings | None = None
    ) -> Session:
        return await self._do(_Calls.create_session(title, height, width, settings))

    async def list_sessions(self, limit: int = 100, offset: int = 0) -> list[Session]:
        call = _Call("GET", "/v1/sessions", params={"limit": limit, "offset": offset}, parse=list[Session])
        return await self._do(call)

    async def get_session(self, session_id: str) -> Session:
        return await self._do(_Call("GET", f"/v1/sessions/{session_id}", parse=Session))

    async def delete_session(self, session_id: str) -> None:
        await self._do(_Call("DELETE", f"/v1/sessions/{session_id}"))

    async def post_turn(
        self,
        session_id: str,
        message: str | None = None,
        plan: TurnPlan | dict | None = None,
        settings: DrawSettings | None = None,
        idempotency_key: str | None = None,
    ) -> Turn:
        return await self._do(_Calls.post_turn(session_id, message, plan, settings, idempotency_key))

    async def get_turn(self, session_id: str, index: int) -> Turn:
        return await self._do(_Call("GET", f"/v1/sessions/{session_id}/turns/{index}", parse=Turn))

    async def list_turns(self, session_id: str) -> list[Turn]:
        return await self._do(_Call("GET", f"/v1/sessions/{session_id}/turns", parse=list[Turn]))

    async def cancel_turn(self, session_id: str, index: int) -> Turn:
        return await self._do(_Call("POST", f"/v1/sessions/{session_id}/turns/{index}/cancel", parse=Turn))

    async def events(self, session_id: str, after: int = 0, timeout: float | None = None) -> AsyncIterator[TurnEvent]:
        async with self._http.stream(
            "GET", f"/v1/sessions/{session_id}/events", params={"after": after}, timeout=timeout
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                _raise_for(response)
            parser = _SSEParser()
            async for line in response.aiter_lines():
                if (event := parser.feed(line)) is not None:
                    yield event

    async def wait(self, turn: Turn, timeout: float = 600.0) -> Turn:
        current = await self.get_turn(turn.session_id, turn.index)
        if not current.status.finished:
            async for event in self.events(turn.session_id, timeout=timeout):
                if event.turn_id == turn.id and event.type in ("done", "failed"):
                    break
            current = await self.get_turn(turn.session_id, turn.index)
        if current.status == "failed":
            raise TurnFailedError(current)
        return current

    async def chat(
        self, session_id: str, message: str, idempotency_key: str | None = None, timeout: float = 600.0
    ) -> Turn:
        turn = await self.post_turn(session_id, message=message, idempotency_key=idempotency_key)
        return await self.wait(turn, timeout)

    async def draw_plan(self, session_id: str, plan: TurnPlan | dict, timeout: float = 600.0) -> Turn:
        return await self.wait(await self.post_turn(session_id, plan=plan), timeout)

    async def upload_reference(
        self, session_id: str, name: str, image: bytes, description: str = "", subject_id: str | None = None
    ) -> SubjectView:
        return await self._do(_Calls.upload_reference(session_id, name, image, description, subject_id))

    async def list_subjects(self, session_id: str) -> list[SubjectView]:
        return await self._do(_Call("GET", f"/v1/sessions/{session_id}/subjects", parse=list[SubjectView]))

    async def get_image(self, image_id_or_url: str) -> bytes:
        return await self._do(_Call("GET", _image_path(image_id_or_url), parse="bytes"))

    async def health(self) -> dict[str, Any]:
        return await self._do(_Call("GET", "/healthz", parse=dict[str, Any]))


def _image_path(image_id_or_url: str) -> str:
    return image_id_or_url if image_id_or_url.startswith("/") else f"/v1/images/{image_id_or_url}"


__all__ = [
    "AsyncStudioClient",
    "AuthenticationError",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitedError",
    "StudioClient",
    "StudioError",
    "TurnFailedError",
]
