"""Subjects: the characters and objects the studio keeps consistent across turns."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, Field, field_validator, model_validator

from studio.reference_controls import MAX_SUBJECT_REFERENCES, ReferenceCombine, ReferenceScale, ReferenceWindow

SUBJECT_ID_PATTERN = re.compile(r"^[1-9][0-9]{0,5}(-[1-9][0-9]{0,5})?$")


def validate_subject_id(value: str | int) -> str:
    """Subject ids are "1", "2", … and components "1-1", "1-2", … (at most six digits a part); ints are
    accepted and kept as text."""
    text = str(value).strip()
    if not SUBJECT_ID_PATTERN.match(text):
        raise ValueError(f"subject id {value!r} must look like '1' or, for a component, '1-1'")
    return text


def parent_of(subject_id: str) -> str | None:
    """The mother id of a component ("1-2" → "1"), or None for a mother subject."""
    return subject_id.split("-", 1)[0] if "-" in subject_id else None


def is_component(subject_id: str) -> bool:
    """Whether the id names a component of another subject ("1-2"), not a mother subject ("1")."""
    return parent_of(subject_id) is not None


def family_of(subject_id: str) -> str:
    """The mother id of the subject's family: its parent for a component, itself for a mother."""
    return parent_of(subject_id) or subject_id


def id_key(subject_id: str) -> list[int]:
    """Sort key that orders ids numerically: "2" < "2-1" < "10"."""
    return [int(part) for part in subject_id.split("-")]


def next_mother_id(taken: set[str]) -> str:
    """The next free subject id after those taken."""
    mothers = [int(i) for i in taken if not is_component(i)]
    return str(max(mothers, default=0) + 1)


def next_component_id(parent_id: str, taken: set[str]) -> str:
    """The next free component id of `parent_id` ("1-1", "1-2", …)."""
    parts = [int(i.split("-", 1)[1]) for i in taken if parent_of(i) == parent_id]
    return f"{parent_id}-{max(parts, default=0) + 1}"


class ReferenceSource(StrEnum):
    """Where a subject's reference image came from."""

    UPLOAD = "upload"
    PRERENDER = "prerender"
    FINAL = "final"


class Subject(BaseModel):
    """One entry of the subject memory."""

    id: str
    name: str = Field(min_length=1, max_length=100, description="the noun used for detection, e.g. 'girl'")
    description: str = Field(default="", max_length=500, description="stable appearance")
    parent_id: str | None = None
    reference_image_id: str | None = None
    reference_source: ReferenceSource | None = None
    reference_score: float | None = None
    first_seen_turn: int | None = None
    refreshed_turn: int | None = None
    anchor_cache_id: str | None = Field(
        default=None,
        max_length=200,
        description="ConsiStory anchor cache: image-store id of its safetensors blob (drawer AnchorCache.to_bytes); "
        "the drawer ignores a cache recorded with another reference",
    )
    more_reference_image_ids: list[str] = Field(
        default_factory=list,
        max_length=MAX_SUBJECT_REFERENCES - 1,
        description="further reference images (uploads), used with the main one (docs/reference_controls.md)",
    )
    reference_scale: ReferenceScale | None = Field(default=None, description="plan items' default; None: 1")
    reference_window: ReferenceWindow | None = Field(default=None, description="plan items' default; None: [0, 1]")
    reference_combine: ReferenceCombine | None = Field(default=None, description="plan items' default; None: average")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return validate_subject_id(value)

    @model_validator(mode="after")
    def _parent_matches_id(self) -> Subject:
        expected = parent_of(self.id)
        if self.parent_id is None:
            self.parent_id = expected
        elif self.parent_id != expected:
            raise ValueError(f"subject {self.id!r} must have parent_id {expected!r}")
        return self

    @property
    def is_component(self) -> bool:
        return self.parent_id is not None
