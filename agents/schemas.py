"""What the three agent nodes exchange: the subject analysis of a turn, the layout reply and the review.

The reply models double as the JSON schemas the LLM must follow, so every field is required (nullable
where it may be empty) and no field allows extra keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RelationKind = Literal["left_of", "right_of", "above", "below", "left", "right", "top", "bottom", "center", "on"]
"""Pairwise (`left_of`, `right_of`, `above`, `below`, `on`) or absolute (`left`, `right`, `top`, `bottom`,
`center`: where on the canvas); `on` marks an intended overlap (riding, holding, sitting on)."""

PAIRWISE_RELATIONS = frozenset({"left_of", "right_of", "above", "below", "on"})


class _Strict(BaseModel):
    """The schema sent to the model forbids extra keys (see agents.response_formats.strict_schema); validation
    is lenient where no meaning is lost: extra keys are ignored and numeric ids become strings."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class SubjectMention(_Strict):
    """A subject shown in this turn's picture."""

    id: str = Field(description="an id from memory, or the next free id for a new subject / component")
    status: Literal["known", "new"]
    name: str = Field(description="the noun a detector should look for, e.g. 'girl'")
    description: str = Field(description="stable appearance, e.g. 'a girl with red hair'")
    parent_id: str | None = Field(description="for a component such as '1-1', its mother id")
    action: str = Field(description="what the subject does or how it looks in this turn; may be empty")


class AttributeUpdate(_Strict):
    """An explicit, lasting change of a known subject's appearance ("the girl now has short hair")."""

    id: str
    description: str = Field(description="the new stable description")
    change: str = Field(description="the change, in a few words")


class Relation(_Strict):
    subject_id: str
    relation: RelationKind
    other_id: str | None = Field(description="the other subject for pairwise relations, else null")


class SubjectAnalysis(_Strict):
    """The subject manager's reading of one message."""

    caption: str = Field(description="one sentence describing the whole picture of this turn")
    subjects: list[SubjectMention] = Field(description="every subject in this turn's picture")
    updates: list[AttributeUpdate] = Field(description="explicit appearance changes of known subjects")
    leaving: list[str] = Field(description="ids of known subjects that leave the scene in this turn")
    background: str | None = Field(description="the scene if the message sets or changes it, else null")
    background_only: bool = Field(description="true when the message only changes the background")
    relations: list[Relation] = Field(description="spatial words of the message, by subject id")


class LayoutItem(_Strict):
    subject_id: str
    phrase: str = Field(description="'<name>, <appearance>, <action>' for this subject")
    x: float
    y: float
    w: float
    h: float


class LayoutReply(_Strict):
    """The layout generator's plan: canvas pixels, top-left origin."""

    background: str
    negative: str
    items: list[LayoutItem]


class SupervisorReply(_Strict):
    approve: bool
    feedback: str = Field(description="concrete changes to make when not approving; empty when approving")


class Review(BaseModel):
    """The supervisor's verdict on one layout."""

    approve: bool
    feedback: str = ""
    issues: list[str] = Field(default_factory=list, description="deterministic problems found")
    source: Literal["checks", "llm", "offline"] = "checks"
