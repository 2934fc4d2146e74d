"""The small interfaces between the steps of a turn. studio/ owns them; agents/, drawer/ and vision/
implement them; the turn service only ever talks to these."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from studio.draw import DrawJob, DrawResult, DrawSettings, SubjectCrop
from studio.geometry import Box
from studio.plan import TurnPlan
from studio.subjects import Subject
from studio.turns import EventType, TurnRequest

if TYPE_CHECKING:
    from PIL import Image

StepCallback = Callable[[int, int], None]
"""Called as (step, total) after each denoising step."""

EmitEvent = Callable[[EventType, dict[str, Any]], None]
"""Called by an engine to publish a turn event (e.g. "planned", {"plan": ...})."""


@runtime_checkable
class Drawer(Protocol):
    def draw(
        self,
        job: DrawJob,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> DrawResult: ...


class LocateTarget(BaseModel):
    """A subject to find in an image: its id, the noun to detect, and where the plan put it."""

    subject_id: str
    name: str
    planned_box: Box
    parent_id: str | None = None


@runtime_checkable
class SubjectLocator(Protocol):
    """Finds every target in one image (one detector pass, batched segmentation) and returns a crop per
    target id; a target that is not found has `found=False` and a reason."""

    def locate(self, image: Image.Image, targets: list[LocateTarget]) -> dict[str, SubjectCrop]: ...


class HistoryEntry(BaseModel):
    turn_index: int
    message: str | None = None
    plan: TurnPlan | None = None


class TurnContext(BaseModel):
    """What an engine gets to run one turn."""

    model_config = {"ser_json_bytes": "base64", "val_json_bytes": "base64"}

    session_id: str
    turn_id: str
    turn_index: int
    request: TurnRequest
    height: int
    width: int
    settings: DrawSettings
    subjects: list[Subject] = Field(default_factory=list, description="the subject memory before this turn")
    history: list[HistoryEntry] = Field(default_factory=list)
    previous_image_id: str | None = None


class TurnOutcome(BaseModel):
    plan: TurnPlan
    result: DrawResult
    subjects: list[Subject] = Field(description="the whole subject memory after this turn")
    info: dict[str, Any] = Field(default_factory=dict, description="LLM usage, prompt versions, rounds…")


class ImageStore(Protocol):
    """Content-addressed image files. `put` writes atomically and returns the id."""

    def put(self, data: bytes) -> str: ...

    def get(self, image_id: str) -> bytes: ...


@runtime_checkable
class TurnEngine(Protocol):
    """Runs one turn from request to drawn image and updated memory.

    Called again with the same `turn_id` after a crash, it must continue from where it stopped
    (e.g. from its last LangGraph checkpoint) rather than start over. `cancel.is_set()` is to be checked
    between steps (the service's signal also reads the cancel stored on the turn)."""

    def run_turn(
        self,
        ctx: TurnContext,
        emit: EmitEvent,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnOutcome: ...

    def forget(self, session_id: str) -> None:
        """Delete everything the engine keeps for the session (its checkpoints); the session was deleted."""
        ...

    def branch(self, parent_session_id: str, turn_index: int, child_session_id: str) -> bool:
        """Start the child session's conversation where the parent's stood at the end of turn `turn_index`
        (the state after that turn, copied; nothing is replayed). Returns False when the engine keeps nothing
        for that turn: the child's next turn then starts from its TurnContext alone."""
        ...
