"""Python client SDK. Needs only httpx, httpx-sse and pydantic (plus the schema modules of `studio`).

from api.client import StudioClient
with StudioClient("http://127.0.0.1:8000", api_key="sk-studio-…") as client:
    session = client.create_session(height=512, width=768)
    turn = client.chat(session.id, "a girl and a boy walk to school")
    png = client.get_image(turn.image_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse
from pydantic import TypeAdapter

from api.urls import image_url
from studio.draw import DrawSettings
from studio.fast_mode import PreviewImage
from studio.plan import TurnPlan
from studio.stories import Story, StoryCreate, StoryEvent
from studio.turns import Session, SessionBranch, SessionCreate, SubjectView, Turn, TurnEvent

RETRY_STATUSES = {429, 503}


def preview_of(event: TurnEvent) -> PreviewImage | None:
    """The live preview a `preview` event carries (None for any other event): `.data` holds the JPEG/WebP
    bytes, `.save(folder, stem)` writes it. Use with `wait(turn, on_event=…)` (docs/fast_mode.md)."""
    return PreviewImage.from_event_data(event.data) if event.type == "preview" else None


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


class ConflictError(InvalidRequestError):
    """409: the resource's state forbids the request (e.g. branching at a turn that is not done)."""


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
    kinds = {401: AuthenticationError, 404: NotFoundError, 409: ConflictError, 422: InvalidRequestError}
    kind = (kinds | {429: RateLimitedError}).get(
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
    def branch(session_id: str, index: int, title: str | None) -> _Call:
        body = SessionBranch(title=title).model_dump(mode="json", exclude_none=True)
        return _Call("POST", f"/v1/sessions/{session_id}/turns/{index}/branch", json=body, parse=Session)

    @staticmethod
    def upload_reference(
        session_id: str, name: str, image: bytes, description: str, subject_id: str | None, add: bool = False
    ) -> _Call:
        data = {"name": name, "description": description}
        if subject_id is not None:
            data["subject_id"] = subject_id
        if add:
            data["add"] = "true"
        return _Call(
            "POST",
            f"/v1/sessions/{session_id}/subjects",
            files={"file": ("reference", image, "application/octet-stream")},
            data=data,
            parse=SubjectView,
        )


    @staticmethod
    def update_subject(session_id: str, subject_id: str, fields: dict[str, Any]) -> _Call:
        """PATCH a subject: name, description and the reference controls (docs/reference_controls.md); a
        control given as None goes back to its default."""
        allowed = {"name", "description", "reference_scale", "reference_window", "reference_combine"}
        unknown = sorted(set(fields) - allowed)
        if unknown:
            raise TypeError(f"update_subject got unknown fields {unknown}; allowed: {sorted(allowed)}")
        return _Call("PATCH", f"/v1/sessions/{session_id}/subjects/{subject_id}", json=fields, parse=SubjectView)

    @staticmethod
    def upload_style_reference(session_id: str, image: bytes, scale: float | None) -> _Call:
        data = {} if scale is None else {"scale": repr(float(scale))}
        return _Call(
            "POST",
            f"/v1/sessions/{session_id}/style-reference",
            files={"file": ("style", image, "application/octet-stream")},
            data=data,
            parse=Session,
        )


class EventStreamError(Exception):
    """The event stream could not be (re)established after the configured number of attempts."""

    def __init__(self, session_id: str, last_event_id: int, attempts: int, cause: BaseException | None) -> None:
        super().__init__(
            f"event stream of session {session_id} failed {attempts} times in a row "
            f"(last event id {last_event_id}): {cause!r}"
        )
        self.session_id = session_id
        self.last_event_id = last_event_id
        self.attempts = attempts


class TurnTimeoutError(TimeoutError):
    """`wait` gave up: the turn had not finished within the timeout. `turn` is its last known state."""

    def __init__(self, turn: Turn, timeout: float) -> None:
        super().__init__(
            f"turn {turn.index} of session {turn.session_id} not finished after {timeout:g} s ({turn.status})"
        )
        self.turn = turn
        self.timeout = timeout


STREAM_READ_TIMEOUT = 60.0  # the server pings every 15 s: this much silence means a dead connection
POLL_INTERVAL = 1.0  # between GET /turns/{n} once streaming has given up


def _now() -> float:
    return time.monotonic()


class _Deadline:
    """An optional point in time; `None` seconds means never."""

    def __init__(self, seconds: float | None) -> None:
        self._at = None if seconds is None else _now() + seconds

    def remaining(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - _now())

    @property
    def expired(self) -> bool:
        return self._at is not None and _now() >= self._at

    def clip(self, delay: float) -> float:
        remaining = self.remaining()
        return delay if remaining is None else min(delay, remaining)


class _UntilDeadline(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that ends at the first chunk read after the deadline. Keep-alive comments arrive as
    chunks too, so a connection that only pings (which httpx-sse never surfaces) still lets a wait end."""

    def __init__(self, body: httpx.SyncByteStream | httpx.AsyncByteStream, deadline: _Deadline) -> None:
        self._body, self._deadline = body, deadline

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:  # type: ignore[union-attr]
            yield chunk
            if self._deadline.expired:
                return

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._body:  # type: ignore[union-attr]
            yield chunk
            if self._deadline.expired:
                return

    def close(self) -> None:
        self._body.close()  # type: ignore[union-attr]

    async def aclose(self) -> None:
        await self._body.aclose()  # type: ignore[union-attr]


class _StreamResume:
    """Where one session's event stream stands, shared by both clients' reconnect loops: the last event id
    seen (sent back as Last-Event-ID, and used to drop replayed duplicates), the server's `retry:` hint and
    how many connections in a row failed to deliver anything."""

    def __init__(self, session_id: str, after: int, max_failures: int, read_timeout: float | None) -> None:
        self.session_id = session_id
        self.after = after
        self.last_id = after
        self.max_failures = max_failures
        self.read_timeout = read_timeout
        self.retry_ms: int | None = None
        self.failures = 0
        self._delivered = False

    def request(self, deadline: _Deadline, default: httpx.Timeout) -> dict[str, Any]:
        """Arguments of the (re)connecting GET: the same `after`, plus Last-Event-ID once events were seen."""
        self._delivered = False
        headers = {"Last-Event-ID": str(self.last_id)} if self.last_id > self.after else {}
        read = self.read_timeout
        if (remaining := deadline.remaining()) is not None:
            read = remaining if read is None else min(read, remaining)
        return {
            "url": f"/v1/sessions/{self.session_id}/events",
            "params": {"after": self.after},
            "headers": headers,
            "timeout": httpx.Timeout(default.connect, read=read, write=default.write, pool=default.pool),
        }

    def accept(self, sse: ServerSentEvent) -> TurnEvent | None:
        """The event carried by `sse`, or None for keep-alives, retry hints and replayed duplicates."""
        if sse.retry is not None:
            self.retry_ms = sse.retry
        if not sse.data:
            return None
        event = TurnEvent.model_validate_json(sse.data)
        seq = int(sse.id) if sse.id.isdigit() else event.seq
        if seq <= self.last_id:
            return None
        self.last_id = seq
        self._delivered = True
        return event if event.seq == seq else event.model_copy(update={"seq": seq})

    def reconnect_delay(self, error: BaseException | None) -> float:
        """Seconds to wait before reconnecting after the connection ended (`error` None) or broke. Raises
        EventStreamError once `max_failures` connections in a row delivered no new event, and re-raises
        an error answer that retrying cannot fix (401, 404, …)."""
        if isinstance(error, StudioError) and error.status < 500 and error.status not in RETRY_STATUSES:
            raise error
        self.failures = 0 if self._delivered else self.failures + 1
        if self.failures > self.max_failures:
            raise EventStreamError(self.session_id, self.last_id, self.failures, error)
        if self.retry_ms is not None:
            return self.retry_ms / 1000
        return 0.0 if self.failures == 0 else _backoff(self.failures - 1, None)


class _TurnWaiter:
    """One `wait`, shared by both clients: its deadline, the last event id seen (where a new stream starts),
    and whether the stream is still followed or polling took over."""

    def __init__(self, turn: Turn, timeout: float | None, on_event: Callable[[TurnEvent], None] | None) -> None:
        self.turn, self.timeout, self.on_event = turn, timeout, on_event
        self.deadline = _Deadline(timeout)
        self.after = 0
        self.streaming = True

    def outcome(self, current: Turn) -> Turn | None:
        """`current` once done; TurnFailedError once failed; TurnTimeoutError past the deadline; else None."""
        if current.status == "failed":
            raise TurnFailedError(current)
        if current.status.finished:
            return current
        if self.deadline.expired:
            raise TurnTimeoutError(current, self.timeout or 0.0)
        return None

    def finishes(self, event: TurnEvent) -> bool:
        """Take one event of the stream (passing the turn's own to `on_event`); whether it ends the turn."""
        self.after = event.seq
        if event.turn_id != self.turn.id:
            return False
        if self.on_event is not None:
            self.on_event(event)
        return event.type in ("done", "failed")


class StoryFailedError(Exception):
    """A story ended `failed` (its reason in `story.error`; the frames drawn before are kept)."""

    def __init__(self, story: Story) -> None:
        super().__init__(f"story {story.id} failed: {story.error}")
        self.story = story


class StoryTimeoutError(TimeoutError):
    def __init__(self, story: Story, timeout: float) -> None:
        super().__init__(f"story {story.id} not finished after {timeout} s ({story.frames_done}/{story.frames_total})")
        self.story = story


def _story_body(prompts: list[str] | StoryCreate, options: dict[str, Any]) -> dict[str, Any]:
    """The POST /v1/stories body: a StoryCreate as is, or prompts plus StoryCreate's other fields as options
    (validated here first, so a bad option fails before any request)."""
    request = prompts if isinstance(prompts, StoryCreate) else StoryCreate(prompts=prompts, **options)
    return request.model_dump(mode="json", exclude_unset=True)


def _story_call(method: str, story_id: str, suffix: str = "", parse: Any = Story) -> _Call:
    return _Call(method, f"/v1/stories/{story_id}{suffix}", parse=parse)


class _StoryWaiter:
    """One `wait_story`, shared by both clients: reports progress when the count of drawn frames changes and
    says when the story is over (raising for a failed one or a timeout)."""

    def __init__(self, timeout: float | None, on_progress: Callable[[Story], None] | None) -> None:
        self.deadline = _Deadline(timeout)
        self.timeout = timeout
        self.on_progress = on_progress
        self._seen = -1

    def outcome(self, story: Story) -> Story | None:
        if self.on_progress is not None and story.frames_done != self._seen:
            self._seen = story.frames_done
            self.on_progress(story)
        if story.status == "done":
            return story
        if story.status == "failed":
            raise StoryFailedError(story)
        if self.deadline.expired:
            raise StoryTimeoutError(story, self.timeout or 0.0)
        return None


class _StoryStream:
    """Where one story's event stream stands, shared by both clients' reconnect loops: the last event number
    (sent back as Last-Event-ID; replays at or below it are dropped), whether the story ended, and how many
    connections in a row delivered nothing."""

    FINAL = frozenset({"done", "failed"})

    def __init__(self, story_id: str, after: int, max_failures: int) -> None:
        self.url = f"/v1/stories/{story_id}/events"
        self.last_id = after
        self.max_failures = max_failures
        self.failures = 0
        self.ended = False

    @property
    def open(self) -> bool:
        return not self.ended and self.failures <= self.max_failures

    def headers(self) -> dict[str, str]:
        return {"Last-Event-ID": str(self.last_id)} if self.last_id else {}

    def accept(self, sse: ServerSentEvent) -> StoryEvent | None:
        """The event carried by `sse`, or None for keep-alives and replays."""
        if not sse.data or not sse.id.isdigit() or int(sse.id) <= self.last_id:
            return None
        event = StoryEvent.model_validate_json(sse.data)
        self.last_id, self.failures = event.seq, 0
        self.ended = event.type in self.FINAL
        return event

    def reconnect_delay(self) -> float:
        self.failures += 1
        return _backoff(self.failures - 1, None)


class StudioClient:
    """Synchronous client. Retries 429/503 with exponential backoff (honouring Retry-After); resumes a
    dropped event stream with Last-Event-ID up to `stream_retries` times in a row (honouring `retry:`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.BaseTransport | None = None,
        stream_retries: int = 5,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.max_retries = max_retries
        self.stream_retries = stream_retries

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

    def branch(self, session_id: str, index: int, title: str | None = None) -> Session:
        """A new session sharing this one's turns 1..index, its memory after turn `index` and its conversation
        state (0: a fresh session with the same canvas and settings). ConflictError when the turn is not done."""
        return self._do(_Calls.branch(session_id, index, title))

    def redo(
        self,
        session_id: str,
        index: int,
        message: str | None = None,
        plan: TurnPlan | dict | None = None,
        settings: DrawSettings | None = None,
    ) -> Turn:
        """Redo turn `index` with a new message or plan: a branch after turn index−1 and the new turn posted
        to it (queued; `wait` for it). The returned turn's `session_id` is the branch."""
        branch = self.branch(session_id, index - 1)
        return self.post_turn(branch.id, message=message, plan=plan, settings=settings)

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

    def events(
        self, session_id: str, after: int = 0, timeout: float | None = STREAM_READ_TIMEOUT
    ) -> Iterator[TurnEvent]:
        """Follow the session's event stream: stored events after `after` first, then live ones, each with its
        sequence id (`seq`). A dropped or ended connection is resumed with Last-Event-ID (no gaps, no
        duplicates); `timeout` is the longest silence (s) before a connection counts as dropped. Raises
        EventStreamError after `stream_retries` reconnects in a row that delivered nothing."""
        yield from self._stream(session_id, after, timeout, _Deadline(None))

    def _stream(
        self, session_id: str, after: int, read_timeout: float | None, deadline: _Deadline
    ) -> Iterator[TurnEvent]:
        resume = _StreamResume(session_id, after, self.stream_retries, read_timeout)
        while not deadline.expired:
            error: BaseException | None = None
            try:
                with connect_sse(self._http, "GET", **resume.request(deadline, self._http.timeout)) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        _raise_for(source.response)
                    source.response.stream = _UntilDeadline(source.response.stream, deadline)
                    for sse in source.iter_sse():
                        if (event := resume.accept(sse)) is not None:
                            yield event
                        if deadline.expired:
                            return
            except (httpx.TransportError, StudioError) as exc:
                error = exc
            if deadline.expired:
                return
            time.sleep(deadline.clip(resume.reconnect_delay(error)))

    def wait(
        self, turn: Turn, timeout: float | None = 600.0, on_event: Callable[[TurnEvent], None] | None = None
    ) -> Turn:
        """Return `turn` once it is done; raise TurnFailedError if it failed and TurnTimeoutError if it has
        not finished after `timeout` seconds. Follows the event stream (calling `on_event` with each event
        of this turn), resuming it when it ends or breaks; polls GET /turns/{n} if streaming keeps failing,
        riding out a server that is unreachable for a while (a restart) until the timeout."""
        waiter = _TurnWaiter(turn, timeout, on_event)
        current = self.get_turn(turn.session_id, turn.index)
        while (done := waiter.outcome(current)) is None:
            if waiter.streaming:
                try:
                    for event in self._stream(turn.session_id, waiter.after, STREAM_READ_TIMEOUT, waiter.deadline):
                        if waiter.finishes(event):
                            break
                except EventStreamError:
                    waiter.streaming = False
            else:
                time.sleep(waiter.deadline.clip(POLL_INTERVAL))
            with contextlib.suppress(httpx.TransportError):  # unreachable for now: keep the last known state
                current = self.get_turn(turn.session_id, turn.index)
        return done

    def chat(self, session_id: str, message: str, idempotency_key: str | None = None, timeout: float = 600.0) -> Turn:
        """Post a chat message and wait for its image."""
        return self.wait(self.post_turn(session_id, message=message, idempotency_key=idempotency_key), timeout)

    def draw_plan(self, session_id: str, plan: TurnPlan | dict, timeout: float = 600.0) -> Turn:
        return self.wait(self.post_turn(session_id, plan=plan), timeout)

    # subjects and images
    def upload_reference(
        self,
        session_id: str,
        name: str,
        image: bytes,
        description: str = "",
        subject_id: str | None = None,
        add: bool = False,
    ) -> SubjectView:
        """Upload a subject's reference image; with `add`, one more reference next to those it has."""
        return self._do(_Calls.upload_reference(session_id, name, image, description, subject_id, add))

    def update_subject(self, session_id: str, subject_id: str, **fields: Any) -> SubjectView:
        """Change a subject's name, description or reference controls (`reference_scale`, `reference_window`,
        `reference_combine`; None resets one)."""
        return self._do(_Calls.update_subject(session_id, subject_id, fields))

    def upload_style_reference(self, session_id: str, image: bytes, scale: float | None = None) -> Session:
        """Make an image the session's global style reference (whole canvas, at `scale`)."""
        return self._do(_Calls.upload_style_reference(session_id, image, scale))

    def list_subjects(self, session_id: str) -> list[SubjectView]:
        return self._do(_Call("GET", f"/v1/sessions/{session_id}/subjects", parse=list[SubjectView]))

    def get_image(self, image_id_or_url: str) -> bytes:
        return self._do(_Call("GET", _image_path(image_id_or_url), parse="bytes"))

    def health(self) -> dict[str, Any]:
        return self._do(_Call("GET", "/healthz", parse=dict[str, Any]))

    # stories
    def create_story(self, prompts: list[str] | StoryCreate, **options: Any) -> Story:
        """Queue a long story (docs/stories.md): `prompts` (one per frame) plus StoryCreate's fields as
        options (rounds, seed, style, height, width, preset, layouts, …), or a StoryCreate."""
        return self._do(_Call("POST", "/v1/stories", json=_story_body(prompts, options), parse=Story))

    def get_story(self, story_id: str) -> Story:
        """The story with its frames per round (image URLs included)."""
        return self._do(_story_call("GET", story_id))

    def list_stories(self, limit: int = 100, offset: int = 0) -> list[Story]:
        return self._do(_Call("GET", "/v1/stories", params={"limit": limit, "offset": offset}, parse=list[Story]))

    def cancel_story(self, story_id: str) -> Story:
        return self._do(_story_call("POST", story_id, "/cancel"))

    def delete_story(self, story_id: str) -> None:
        self._do(_story_call("DELETE", story_id, parse=None))

    def wait_story(
        self,
        story: Story | str,
        timeout: float | None = 3600.0,
        on_progress: Callable[[Story], None] | None = None,
        poll_seconds: float = POLL_INTERVAL,
    ) -> Story:
        """Return the story once done (frames included), calling `on_progress` whenever more frames are drawn;
        StoryFailedError if it failed, StoryTimeoutError after `timeout` seconds."""
        waiter = _StoryWaiter(timeout, on_progress)
        story_id = story if isinstance(story, str) else story.id
        while (done := waiter.outcome(self.get_story(story_id))) is None:
            time.sleep(waiter.deadline.clip(poll_seconds))
        return done

    def story_events(self, story_id: str, after: int = 0) -> Iterator[StoryEvent]:
        """Follow the story's events (frame, round, done/failed) until it ends, resuming a dropped stream with
        Last-Event-ID (at most `stream_retries` failed reconnects in a row)."""
        stream = _StoryStream(story_id, after, self.stream_retries)
        while stream.open:
            with (
                contextlib.suppress(httpx.TransportError),
                connect_sse(self._http, "GET", stream.url, headers=stream.headers()) as source,
            ):
                if source.response.status_code >= 400:
                    source.response.read()
                    _raise_for(source.response)
                for sse in source.iter_sse():
                    if (event := stream.accept(sse)) is not None:
                        yield event
                        if stream.ended:
                            return
            time.sleep(stream.reconnect_delay())


class AsyncStudioClient:
    """The same API for asyncio."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        max_retries: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        stream_retries: int = 5,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.max_retries = max_retries
        self.stream_retries = stream_retries

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

    async def branch(self, session_id: str, index: int, title: str | None = None) -> Session:
        """See StudioClient.branch."""
        return await self._do(_Calls.branch(session_id, index, title))

    async def redo(
        self,
        session_id: str,
        index: int,
        message: str | None = None,
        plan: TurnPlan | dict | None = None,
        settings: DrawSettings | None = None,
    ) -> Turn:
        """See StudioClient.redo."""
        branch = await self.branch(session_id, index - 1)
        return await self.post_turn(branch.id, message=message, plan=plan, settings=settings)

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

    async def events(
        self, session_id: str, after: int = 0, timeout: float | None = STREAM_READ_TIMEOUT
    ) -> AsyncIterator[TurnEvent]:
        """See StudioClient.events."""
        async for event in self._stream(session_id, after, timeout, _Deadline(None)):
            yield event

    async def _stream(
        self, session_id: str, after: int, read_timeout: float | None, deadline: _Deadline
    ) -> AsyncIterator[TurnEvent]:
        resume = _StreamResume(session_id, after, self.stream_retries, read_timeout)
        while not deadline.expired:
            error: BaseException | None = None
            try:
                async with aconnect_sse(self._http, "GET", **resume.request(deadline, self._http.timeout)) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        _raise_for(source.response)
                    source.response.stream = _UntilDeadline(source.response.stream, deadline)
                    async for sse in source.aiter_sse():
                        if (event := resume.accept(sse)) is not None:
                            yield event
                        if deadline.expired:
                            return
            except (httpx.TransportError, StudioError) as exc:
                error = exc
            if deadline.expired:
                return
            await asyncio.sleep(deadline.clip(resume.reconnect_delay(error)))

    async def wait(
        self, turn: Turn, timeout: float | None = 600.0, on_event: Callable[[TurnEvent], None] | None = None
    ) -> Turn:
        """See StudioClient.wait."""
        waiter = _TurnWaiter(turn, timeout, on_event)
        current = await self.get_turn(turn.session_id, turn.index)
        while (done := waiter.outcome(current)) is None:
            if waiter.streaming:
                try:
                    stream = self._stream(turn.session_id, waiter.after, STREAM_READ_TIMEOUT, waiter.deadline)
                    async for event in stream:
                        if waiter.finishes(event):
                            break
                except EventStreamError:
                    waiter.streaming = False
            else:
                await asyncio.sleep(waiter.deadline.clip(POLL_INTERVAL))
            with contextlib.suppress(httpx.TransportError):  # unreachable for now: keep the last known state
                current = await self.get_turn(turn.session_id, turn.index)
        return done

    async def chat(
        self, session_id: str, message: str, idempotency_key: str | None = None, timeout: float = 600.0
    ) -> Turn:
        turn = await self.post_turn(session_id, message=message, idempotency_key=idempotency_key)
        return await self.wait(turn, timeout)

    async def draw_plan(self, session_id: str, plan: TurnPlan | dict, timeout: float = 600.0) -> Turn:
        return await self.wait(await self.post_turn(session_id, plan=plan), timeout)

    async def upload_reference(
        self,
        session_id: str,
        name: str,
        image: bytes,
        description: str = "",
        subject_id: str | None = None,
        add: bool = False,
    ) -> SubjectView:
        return await self._do(_Calls.upload_reference(session_id, name, image, description, subject_id, add))

    async def update_subject(self, session_id: str, subject_id: str, **fields: Any) -> SubjectView:
        return await self._do(_Calls.update_subject(session_id, subject_id, fields))

    async def upload_style_reference(self, session_id: str, image: bytes, scale: float | None = None) -> Session:
        return await self._do(_Calls.upload_style_reference(session_id, image, scale))

    async def list_subjects(self, session_id: str) -> list[SubjectView]:
        return await self._do(_Call("GET", f"/v1/sessions/{session_id}/subjects", parse=list[SubjectView]))

    async def get_image(self, image_id_or_url: str) -> bytes:
        return await self._do(_Call("GET", _image_path(image_id_or_url), parse="bytes"))

    async def health(self) -> dict[str, Any]:
        return await self._do(_Call("GET", "/healthz", parse=dict[str, Any]))

    # stories
    async def create_story(self, prompts: list[str] | StoryCreate, **options: Any) -> Story:
        return await self._do(_Call("POST", "/v1/stories", json=_story_body(prompts, options), parse=Story))

    async def get_story(self, story_id: str) -> Story:
        return await self._do(_story_call("GET", story_id))

    async def list_stories(self, limit: int = 100, offset: int = 0) -> list[Story]:
        params = {"limit": limit, "offset": offset}
        return await self._do(_Call("GET", "/v1/stories", params=params, parse=list[Story]))

    async def cancel_story(self, story_id: str) -> Story:
        return await self._do(_story_call("POST", story_id, "/cancel"))

    async def delete_story(self, story_id: str) -> None:
        await self._do(_story_call("DELETE", story_id, parse=None))

    async def wait_story(
        self,
        story: Story | str,
        timeout: float | None = 3600.0,
        on_progress: Callable[[Story], None] | None = None,
        poll_seconds: float = POLL_INTERVAL,
    ) -> Story:
        waiter = _StoryWaiter(timeout, on_progress)
        story_id = story if isinstance(story, str) else story.id
        while (done := waiter.outcome(await self.get_story(story_id))) is None:
            await asyncio.sleep(waiter.deadline.clip(poll_seconds))
        return done

    async def story_events(self, story_id: str, after: int = 0) -> AsyncIterator[StoryEvent]:
        stream = _StoryStream(story_id, after, self.stream_retries)
        while stream.open:
            with contextlib.suppress(httpx.TransportError):
                async with aconnect_sse(self._http, "GET", stream.url, headers=stream.headers()) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        _raise_for(source.response)
                    async for sse in source.aiter_sse():
                        if (event := stream.accept(sse)) is not None:
                            yield event
                            if stream.ended:
                                return
            await asyncio.sleep(stream.reconnect_delay())


def _image_path(image_id_or_url: str) -> str:
    return image_id_or_url if image_id_or_url.startswith("/") else image_url(image_id_or_url)


__all__ = [
    "AsyncStudioClient",
    "AuthenticationError",
    "EventStreamError",
    "InvalidRequestError",
    "NotFoundError",
    "RateLimitedError",
    "StudioClient",
    "StudioError",
    "TurnFailedError",
    "TurnTimeoutError",
]
