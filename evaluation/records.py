"""What a run writes about itself: the manifest (checked on resume) and one record per finished turn."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from studio.draw import DrawSettings, SubjectCrop
from studio.plan import TurnPlan
from studio.subjects import Subject

Task = Literal["story", "editing"]


class RunManifest(BaseModel):
    """The choices that decide what a turn's picture looks like. A resumed run must make the same ones, or its
    folder would mix two experiments."""

    task: Task
    data_sha256: str
    canvas: int
    base_seed: int
    settings: DrawSettings = Field(description="the settings of every turn, seed excepted (seeds are per turn)")
    preset: str | None = None
    through_agents: bool = False
    official_quirks: bool = False
    refresh: Literal["first", "better"] = "first"
    max_side: int | None = None


class CropRecord(BaseModel):
    """A SubjectCrop without its bytes: the crop image lives in its own file."""

    subject_id: str
    found: bool
    reason: str | None = None
    box: Any | None = None
    score: float = 0.0
    iou_with_plan: float = 0.0
    crop_file: str | None = None
    crop_sha256: str | None = None

    @classmethod
    def from_crop(cls, crop: SubjectCrop, crop_file: str | None, crop_sha256: str | None) -> CropRecord:
        return cls(
            subject_id=crop.subject_id,
            found=crop.found,
            reason=crop.reason,
            box=crop.box.model_dump() if crop.box is not None else None,
            score=crop.score,
            iou_with_plan=crop.iou_with_plan,
            crop_file=crop_file,
            crop_sha256=crop_sha256,
        )


class TurnRecord(BaseModel):
    """Written after the turn's image and crops: its presence (and matching hashes) means the turn is done."""

    dialogue: str
    turn: int
    turn_key: str
    seed: int
    image_file: str
    image_sha256: str
    width: int
    height: int
    plan: TurnPlan = Field(description="the plan actually drawn (the agents' plan with --through-agents)")
    references: list[str] = Field(default_factory=list, description="subject ids that had a reference")
    crops: list[CropRecord] = Field(default_factory=list)
    memory: list[Subject] = Field(default_factory=list, description="the subject memory after this turn")
    timings: dict[str, float] = Field(default_factory=dict)
    info: dict[str, Any] = Field(default_factory=dict)


class DialogueError(BaseModel):
    dialogue: str
    turn: int
    error: str


class RunSummary(BaseModel):
    out: str
    dialogues: list[str] = Field(default_factory=list)
    turns_drawn: int = 0
    turns_skipped: int = 0
    errors: list[DialogueError] = Field(default_factory=list)
