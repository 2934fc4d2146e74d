"""The LangGraph state of a conversation. Every value is plain JSON (dicts, lists, strings, numbers), so
any checkpointer can hold it; images are referred to by their ImageStore id, never as bytes.

The lists that grow during a turn (messages, calls, reviews) have an `operator.add` reducer: a node returns
only its new items. A fresh turn's input replaces them (`fresh_turn_input` wraps them in `Overwrite`).
Checkpoints store a reducer channel's value exactly as they stored the plain value before, so a thread
checkpointed before the reducers existed loads and resumes unchanged."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict, get_origin, get_type_hints

from langgraph.types import Overwrite

from studio.draw import DrawResult, SubjectCrop
from studio.geometry import Box
from studio.plan import TurnPlan
from studio.protocols import HistoryEntry, ImageStore
from studio.subjects import Subject

Json = dict[str, Any]


class ConversationState(TypedDict, total=False):
    session_id: str
    turn_id: str
    turn_index: int
    height: int
    width: int
    messages: Annotated[list[Json], operator.add]
    """[{"role": "user" | "assistant", "content": str, "turn_index": int}] of the whole session."""
    history: list[Json]
    subjects: list[Json]
    """The subject memory: before the turn until `memorize` commits the memory after it."""
    pending_subjects: list[Json]
    """Memory plus this turn's new subjects and explicit updates, before drawing."""
    drawn_subjects: list[Json]
    explicit: bool
    analysis: Json | None
    draft: Json | None
    plan: Json | None
    feedback: str | None
    verdict: str | None
    rounds: int
    best: Json | None
    reviews: Annotated[list[Json], operator.add]
    hit_revision_bound: bool
    draw_settings: Json
    previous_image_id: str | None
    draw: Json | None
    calls: Annotated[list[Json], operator.add]
    prompt_versions: dict[str, str]
    planner: str
    memory_changes: Json
    done: bool


APPENDED_KEYS = frozenset(
    key for key, hint in get_type_hints(ConversationState, include_extras=True).items() if get_origin(hint) is Annotated
)
"""The keys with a reducer: nodes append to them."""


def fresh_turn_input(state: ConversationState) -> dict[str, Any]:
    """The graph input that starts a new turn: every key set, the appended lists replaced, not extended."""
    return {key: Overwrite(value) if key in APPENDED_KEYS else value for key, value in state.items()}


def subjects_of(items: list[Json] | None) -> list[Subject]:
    return [Subject.model_validate(item) for item in items or []]


def dump_subjects(subjects: list[Subject]) -> list[Json]:
    return [subject.model_dump(mode="json") for subject in subjects]


def history_of(state: ConversationState) -> list[HistoryEntry]:
    return [HistoryEntry.model_validate(item) for item in state.get("history") or []]


def previous_boxes(history: list[HistoryEntry], height: int, width: int) -> dict[str, Box]:
    """The latest box of every subject drawn before, rescaled to this turn's canvas."""
    boxes: dict[str, Box] = {}
    for entry in sorted(history, key=lambda e: e.turn_index):
        if entry.plan is None:
            continue
        sx, sy = width / entry.plan.width, height / entry.plan.height
        for item in entry.plan.items:
            boxes[item.subject_id] = item.box.scaled(sx, sy)
    return boxes


def last_plan(history: list[HistoryEntry]) -> TurnPlan | None:
    plans = [entry for entry in sorted(history, key=lambda e: e.turn_index) if entry.plan is not None]
    return plans[-1].plan if plans else None


def draw_record(result: DrawResult, images: ImageStore) -> Json:
    """The draw result with every image replaced by its store id."""
    crops = {}
    for subject_id, crop in result.crops.items():
        data = crop.model_dump(mode="json", exclude={"crop", "mask"})
        data["crop_image_id"] = images.put(crop.crop) if crop.crop is not None else None
        data["mask_image_id"] = images.put(crop.mask) if crop.mask is not None else None
        crops[subject_id] = data
    return {
        "image_id": images.put(result.image),
        "width": result.width,
        "height": result.height,
        "seed": result.seed,
        "crops": crops,
        "timings": dict(result.timings),
        "debug_image_id": images.put(result.debug_image) if result.debug_image is not None else None,
    }


def draw_result(record: Json, images: ImageStore) -> DrawResult:
    """Rebuild the DrawResult of a record (after a resume the images come back from the store)."""
    crops = {}
    for subject_id, data in record["crops"].items():
        fields = {k: v for k, v in data.items() if k not in ("crop_image_id", "mask_image_id")}
        crop_id, mask_id = data.get("crop_image_id"), data.get("mask_image_id")
        fields["crop"] = images.get(crop_id) if crop_id else None
        fields["mask"] = images.get(mask_id) if mask_id else None
        crops[subject_id] = SubjectCrop.model_validate(fields)
    debug_id = record.get("debug_image_id")
    return DrawResult(
        image=images.get(record["image_id"]),
        width=record["width"],
        height=record["height"],
        seed=record["seed"],
        crops=crops,
        timings=record.get("timings", {}),
        debug_image=images.get(debug_id) if debug_id else None,
    )
