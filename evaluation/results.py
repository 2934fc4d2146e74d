"""Score files: per-dialogue rows and the run's averages, for the story and the editing task."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ScoreSettings(BaseModel):
    clip: str
    detector: str
    segmenter: str
    official_quirks: bool
    fid_features: str = Field(description="what the Fréchet distance is computed on")


class StoryDialogueScore(BaseModel):
    dialogue: str
    ccs: float | None = Field(description="None: no subject appears twice")
    fid: float | None
    tis: float | None
    per_subject_ccs: dict[str, float] = Field(default_factory=dict)
    turns_scored: int = 0
    pairs: int = 0
    misses: int = 0


class StoryScore(BaseModel):
    task: Literal["story"] = "story"
    method: str
    accs: float | None
    afid: float | None
    atis: float | None
    dialogues_scored: int
    settings: ScoreSettings
    dialogues: list[StoryDialogueScore] = Field(default_factory=list)


class EditingDialogueScore(BaseModel):
    dialogue: str
    spatial: bool | None = None
    attribute: bool | None = None
    negative: bool | None = None
    numeracy: bool | None = None
    dropped: bool = Field(default=False, description="the original evaluator would have skipped this dialogue")


class Accuracy(BaseModel):
    passed: int = 0
    total: int = 0

    @property
    def value(self) -> float | None:
        return self.passed / self.total if self.total else None


class EditingScore(BaseModel):
    task: Literal["editing"] = "editing"
    method: str
    spatial: float | None
    attribute: float | None
    negative: float | None
    numeracy: float | None
    counts: dict[str, Accuracy] = Field(default_factory=dict)
    dialogues_scored: int
    settings: ScoreSettings
    dialogues: list[EditingDialogueScore] = Field(default_factory=list)


TaskScore = StoryScore | EditingScore
