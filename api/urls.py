"""The one place where image ids become URLs: every route, the event stream and the SDK use it. No
fastapi import here (the SDK imports this module). The service stores and emits ids only."""

from __future__ import annotations

from studio.stories import Story, StoryEvent
from studio.subjects import Subject
from studio.turns import SubjectView, Turn, TurnEvent

IMAGES_PATH = "/v1/images"


def image_url(image_id: str) -> str:
    return f"{IMAGES_PATH}/{image_id}"


def _optional_url(image_id: str | None) -> str | None:
    return image_url(image_id) if image_id else None


def turn_with_urls(turn: Turn) -> Turn:
    crops = [
        # rows of the first release stored crop_url and no crop_image_id: keep their URL
        crop.model_copy(update={"crop_url": _optional_url(crop.crop_image_id) or crop.crop_url})
        for crop in turn.crops
    ]
    return turn.model_copy(
        update={
            "image_url": _optional_url(turn.image_id),
            "debug_image_url": _optional_url(turn.debug_image_id),
            "crops": crops,
        }
    )


def event_with_urls(event: TurnEvent) -> TurnEvent:
    """A `done` event carries the image id; the stream adds its URL (stored events of the first release
    already have it)."""
    image_id = event.data.get("image_id")
    if event.type != "done" or not image_id or "image_url" in event.data:
        return event
    return event.model_copy(update={"data": {**event.data, "image_url": image_url(image_id)}})


def subject_view(subject: Subject) -> SubjectView:
    return SubjectView(**subject.model_dump(), reference_url=_optional_url(subject.reference_image_id))


def story_with_urls(story: Story) -> Story:
    rounds = [
        [frame.model_copy(update={"image_url": image_url(frame.image_id)}) for frame in frames]
        for frames in story.rounds
    ]
    return story.model_copy(update={"rounds": rounds})


def story_event_with_urls(event: StoryEvent) -> StoryEvent:
    """A `frame` event carries the image id; the stream adds its URL."""
    image_id = event.data.get("image_id")
    if event.type != "frame" or not image_id:
        return event
    return event.model_copy(update={"data": {**event.data, "image_url": image_url(image_id)}})
