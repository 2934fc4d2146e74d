"""Stories (long-story mode, docs/stories.md): create (202), list, get, cancel, delete, and the story's event
stream (SSE)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials
from sse_starlette.sse import EventSourceResponse

from api.auth import bearer, current_tenant, get_service, tenant_of
from api.errors import error_responses
from api.urls import story_event_with_urls, story_with_urls
from studio.rejections import RequestRejected
from studio.service import TurnService
from studio.stories import Story, StoryCreate, StoryEvent, story_events
from studio.story_runner import StoryRunner

router = APIRouter(prefix="/v1/stories", tags=["stories"], responses=error_responses(401, 422))
MAX_INT = 2**31 - 1


def story_runner(service: TurnService = Depends(get_service)) -> StoryRunner:
    if service.stories is None:
        raise RuntimeError("the service was built without a story runner (entrypoints.runtime.build_service)")
    return service.stories


def owned_story(
    story_id: str,
    service: TurnService = Depends(get_service),
    runner: StoryRunner = Depends(story_runner),
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
) -> Story:
    """The story if it belongs to the caller's tenant; otherwise 404 (existence is not revealed)."""
    story = runner.store.get(story_id, tenant=tenant_of(service, credentials), with_frames=True)
    if story is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"story {story_id} not found")
    return story


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=Story, responses=error_responses(400, 413))
def create_story(
    body: StoryCreate, tenant: str = Depends(current_tenant), runner: StoryRunner = Depends(story_runner)
) -> Story:
    """Queue a story: round 0 draws every prompt from text, then `rounds` rounds redraw every frame with the
    global reference over all frames of the round before. 422 for a canvas or preset the service cannot draw,
    and for `fast` (no preset names an LCM scheduler yet)."""
    try:
        return runner.submit(tenant, body)
    except RequestRejected as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc


@router.get("", response_model=list[Story])
def list_stories(
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_INT),
    tenant: str = Depends(current_tenant),
    runner: StoryRunner = Depends(story_runner),
) -> list[Story]:
    """The tenant's stories, newest first, without their frames (GET one story for those)."""
    return runner.store.list(tenant, limit=limit, offset=offset)


@router.get("/{story_id}", response_model=Story, responses=error_responses(404))
def get_story(story: Story = Depends(owned_story)) -> Story:
    """The story with its frames per round (each with its image URL)."""
    return story_with_urls(story)


@router.post(
    "/{story_id}/cancel",
    response_model=Story,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(404, 409),
)
def cancel_story(story: Story = Depends(owned_story), runner: StoryRunner = Depends(story_runner)) -> Story:
    """Cancel an unfinished story (a drawing frame stops between two steps; drawn frames are kept). 409 when
    the story has already finished."""
    if not runner.cancel(story):
        raise HTTPException(status.HTTP_409_CONFLICT, f"story {story.id} has already finished ({story.status})")
    return story_with_urls(story)


@router.delete("/{story_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
def delete_story(story: Story = Depends(owned_story), runner: StoryRunner = Depends(story_runner)) -> Response:
    runner.delete(story)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{story_id}/events", responses=error_responses(404))
async def events(
    request: Request,
    story: Story = Depends(owned_story),
    service: TurnService = Depends(get_service),
    runner: StoryRunner = Depends(story_runner),
    after: int = Query(0, ge=0, le=MAX_INT, description="replay events with a number above this"),
    last_event_id: int | None = Header(default=None, ge=0, le=MAX_INT),
) -> EventSourceResponse:
    """Server-Sent Events of the story: `frame` (a frame of a round is drawn), `round` (a round is complete),
    then `done` or `failed`. Events are numbered from the stored frames (docs/stories.md), so a client resumes
    with `Last-Event-ID` in any process; the stream re-reads on each in-process wake-up and every
    `scaleout.event_poll_seconds`. It ends after `done` or `failed`."""
    start = max(after, last_event_id or 0)
    loop = asyncio.get_running_loop()
    wake = asyncio.Event()
    unsubscribe = service.bus.subscribe(story.id, lambda _: loop.call_soon_threadsafe(wake.set))
    poll_seconds = service.settings.scaleout.event_poll_seconds

    def read() -> tuple[list[StoryEvent], bool]:
        current = runner.store.get(story.id)
        if current is None:
            return [], True
        return story_events(current, runner.store.frames(story.id)), current.status.finished

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            sent = start
            while True:
                wake.clear()
                found, finished = await asyncio.to_thread(read)
                for event in found:
                    if event.seq > sent:
                        sent = event.seq
                        yield _sse(event)
                if finished or await request.is_disconnected():
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=min(poll_seconds, 1.0))
        finally:
            unsubscribe()

    return EventSourceResponse(stream(), ping=15)


def _sse(event: StoryEvent) -> dict[str, str]:
    return {"id": str(event.seq), "event": event.type, "data": story_event_with_urls(event).model_dump_json()}
