"""Sessions, turns, their statuses and the events a turn emits."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from studio.draw import DrawSettings, SubjectCrop
from studio.plan import CANVAS_SIDE_BOUND, MIN_CANVAS_SIDE, TurnPlan
from studio.subjects import Subject
from studio.text import Text


class TurnStatus(StrEnum):
    QUEUED = "queued"
    PLANNING = "planning"
    DRAWING = "drawing"
    DONE = "done"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (TurnStatus.DONE, TurnStatus.FAILED)


class SessionCreate(BaseModel):
    title: Text = Field(default="", max_length=200)
    height: int = Field(
        default=512,
        description="default canvas height of the session's turns",
        ge=MIN_CANVAS_SIDE,
        le=CANVAS_SIDE_BOUND,
    )
    width: int = Field(
        default=512, description="default canvas width of the session's turns", ge=MIN_CANVAS_SIDE, le=CANVAS_SIDE_BOUND
    )
    settings: DrawSettings = Field(default_factory=DrawSettings)


class SessionBranch(BaseModel):
    """The optional body of a branch request."""

    title: Text | None = Field(
        default=None, max_length=200, description='default: the parent\'s title + " (branch at turn n)"'
    )


class Session(BaseModel):
    id: str
    tenant: str
    title: str
    height: int
    width: int
    settings: DrawSettings
    created_at: datetime
    turn_count: int = 0
    parent_id: str | None = Field(default=None, description="the session this one was branched from, if any")
    branch_turn: int | None = Field(
        default=None, description="the parent's turn this session branched after; its turns up to it are shared"
    )


class TurnRequest(BaseModel):
    """A turn is either a chat message (planned by the agents) or an explicit plan (no LLM)."""

    message: Text | None = Field(default=None, min_length=1, max_length=4000)
    plan: TurnPlan | None = None
    settings: DrawSettings | None = Field(default=None, description="overrides the session's settings")

    @model_validator(mode="after")
    def _exactly_one(self) -> TurnRequest:
        if (self.message is None) == (self.plan is None):
            raise ValueError("give exactly one of 'message' or 'plan'")
        return self


class SubjectView(Subject):
    reference_url: str | None = None


class CropView(BaseModel):
    subject_id: str
    found: bool
    reason: str | None = None
    score: float = 0.0
    box: Any | None = None
    crop_image_id: str | None = None
    crop_url: str | None = None


class Turn(BaseModel):
    id: str
    session_id: str
    index: int
    status: TurnStatus
    request: TurnRequest
    plan: TurnPlan | None = None
    image_id: str | None = None
    debug_image_id: str | None = None
    image_url: str | None = None
    debug_image_url: str | None = None
    crops: list[CropView] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict, description="e.g. LLM usage, prompt versions, rounds")
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


EventType = Literal["queued", "planning", "planned", "revised", "drawing", "step", "done", "failed", "preview"]


class TurnEvent(BaseModel):
    """One event of a session's stream. `seq` increases by one per session."""

    seq: int = 0
    type: EventType
    session_id: str = ""
    turn_id: str = ""
    turn_index: int = 0
    data: dict[str, Any] = Field(default_factory=dict)


__all__ = [
    "CropView",
    "EventType",
    "Session",
    "SessionBranch",
    "SessionCreate",
    "Subject",
    "SubjectCrop",
    "SubjectView",
    "Turn",
    "TurnEvent",
    "TurnRequest",
    "TurnStatus",
]
