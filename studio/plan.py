"""The turn plan ("prompt book") and its CMIGBench / AutoStudio JSON forms."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, Field, FiniteFloat, ValidationInfo, field_validator, model_validator

from studio.geometry import Box
from studio.reference_controls import ReferenceCombine, ReferenceScale, ReferenceWindow
from studio.regions import MaskStd, MaskStrength, PromptStrength, RegionMask, mask_box
from studio.subjects import is_component, parent_of, validate_subject_id
from studio.text import Text

CMIGBENCH_BOX_SPACE = 512
DEFAULT_MAX_CANVAS_SIDE = 2048
MIN_CANVAS_SIDE = 64
CANVAS_SIDE_BOUND = 16384
"""Schema bounds of any canvas side; the configured maximum and the preset's are checked on top."""
_NONE_TEXT = "None"
MAX_PLAN_ITEMS = 64
"""Schema bound of a plan's lists; the service further limits items to `settings.max_subjects`. pydantic
stops a longer list after validating `MAX_PLAN_ITEMS` + 1 items, so an oversized plan costs bounded work."""

SubjectId = Annotated[str, BeforeValidator(validate_subject_id)]


def canvas_side_problem(side: int, max_side: int) -> str | None:
    """Why `side` cannot be a canvas side (at least 64, a multiple of 8, at most `max_side`), or None."""
    if side < MIN_CANVAS_SIDE:
        return "must be at least 64 pixels"
    if side % 8:
        return "is not a multiple of 8"
    if side > max_side:
        return f"exceeds the maximum of {max_side}"
    return None


class PlanItem(BaseModel):
    """One subject placed in a turn: which subject, what it does here, and where (a box, a mask, or both: a
    plan derives the box of a mask given alone; docs/regions.md)."""

    subject_id: SubjectId
    phrase: Text = Field(min_length=1, max_length=300)
    box: Box | None = Field(default=None, description="canvas pixels; derived from `mask` when absent")
    name: Text | None = Field(
        default=None,
        max_length=100,
        description="noun to detect; defaults to the phrase's text before the first comma",
    )
    reference_scale: ReferenceScale | None = Field(
        default=None, description="multiplier of this subject's image rows; None: the subject memory's, else 1"
    )
    reference_window: ReferenceWindow | None = Field(
        default=None,
        description="[start, end): fractions of the steps with this subject's image rows on; None: memory's, [0, 1]",
    )
    reference_combine: ReferenceCombine | None = Field(
        default=None, description="several references: 'average' the embeddings or 'tokens'; None: memory's, average"
    )
    mask: RegionMask | None = Field(default=None, description="the region as a PNG mask or a polygon")
    mask_strength: MaskStrength = 1.0
    mask_std: MaskStd = 0.0
    prompt_strength: PromptStrength = 1.0
    negative: Text | None = Field(default=None, max_length=1000, description="the region's own negative prompt")

    @model_validator(mode="after")
    def _placed(self) -> PlanItem:
        if self.box is None and self.mask is None:
            raise ValueError("a plan item needs a `box` or a `mask`")
        return self

    @property
    def detection_name(self) -> str:
        if self.name:
            return self.name
        return self.phrase.split(",", 1)[0].strip()[:100] or self.phrase[:100]


class EditSpec(BaseModel):
    """Keep the previous image everywhere except inside the boxes of these subjects (or extra boxes)."""

    regenerate_subject_ids: list[SubjectId] = Field(default_factory=list, max_length=MAX_PLAN_ITEMS)
    regenerate_boxes: list[Box] = Field(default_factory=list, max_length=MAX_PLAN_ITEMS)
    strength: FiniteFloat = Field(default=1.0, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _non_empty(self) -> EditSpec:
        if not self.regenerate_subject_ids and not self.regenerate_boxes:
            raise ValueError("an edit must name at least one subject or box to regenerate")
        return self


class TurnPlan(BaseModel):
    """Everything the drawer needs to know about one turn's picture, boxes in canvas pixels."""

    height: int = Field(
        default=512, description="canvas height in pixels, a multiple of 8", ge=MIN_CANVAS_SIDE, le=CANVAS_SIDE_BOUND
    )
    width: int = Field(
        default=512, description="canvas width in pixels, a multiple of 8", ge=MIN_CANVAS_SIDE, le=CANVAS_SIDE_BOUND
    )
    caption: Text = Field(default="", max_length=2000)
    background: Text = Field(default="", max_length=500)
    negative: Text | None = Field(default=None, max_length=1000)
    items: list[PlanItem] = Field(default_factory=list, max_length=MAX_PLAN_ITEMS)
    edit: EditSpec | None = None

    @field_validator("height", "width")
    @classmethod
    def _canvas_side(cls, value: int, info: ValidationInfo) -> int:
        max_side = (info.context or {}).get("max_canvas_side", DEFAULT_MAX_CANVAS_SIDE)
        problem = canvas_side_problem(value, max_side)
        if problem:
            raise ValueError(f"canvas side {value} {problem}")
        return value

    @model_validator(mode="after")
    def _check_items(self) -> TurnPlan:
        ids = [item.subject_id for item in self.items]
        duplicates = sorted(i for i, count in Counter(ids).items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate subject ids in one turn: {duplicates}")
        present = set(ids)
        for item in self.items:
            parent = parent_of(item.subject_id)
            if parent is not None and parent not in present:
                raise ValueError(f"component {item.subject_id!r} needs its parent {parent!r} in the same turn")
        clipped_items = []
        for index, item in enumerate(self.items):
            if item.mask is not None:
                derived = mask_box(item.mask, self.height, self.width, f"items[{index}].mask")
                if item.box is None:
                    item = item.model_copy(update={"box": derived})
            assert item.box is not None
            clipped = item.box.clipped(self.height, self.width)
            if clipped is None:
                raise ValueError(
                    f"box of subject {item.subject_id!r} lies wholly outside the {self.width}x{self.height} canvas"
                )
            clipped_items.append(item.model_copy(update={"box": clipped}) if clipped != item.box else item)
        self.items = clipped_items
        if self.edit is not None:
            unknown = [s for s in self.edit.regenerate_subject_ids if s not in present]
            if unknown:
                raise ValueError(f"edit names subjects not in this turn: {unknown}")
        return self

    @property
    def subject_ids(self) -> list[str]:
        return [item.subject_id for item in self.items]

    def item(self, subject_id: str) -> PlanItem:
        for item in self.items:
            if item.subject_id == subject_id:
                return item
        raise KeyError(subject_id)

    @property
    def negative_prompt(self) -> str:
        return self.negative or ""

    def global_prompt(self) -> str:
        """ "<background> with <phrase1>, <phrase2>, …" over every item (the caption the metrics and messages use).
        The drawer's global prompt keeps mother subjects only, as AutoStudio does: drawer.batches.scene_prompt."""
        phrases = ", ".join(item.phrase for item in self.items)
        if self.background and phrases:
            return f"{self.background} with {phrases}"
        return self.background or phrases or self.caption


# --- CMIGBench / AutoStudio JSON forms --------------------------------------------------------------


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class TurnFormat(BaseModel):
    """How a turn was written in its file, so that writing it back loses nothing."""

    explicit_size: bool
    int_ids: bool


def plan_from_cmigbench(turn: dict[str, Any], canvas: tuple[int, int] = (512, 512)) -> tuple[TurnPlan, TurnFormat]:
    """Read one turn of either form. With `size` [h, w] boxes are canvas pixels; without it they are in
    CMIGBench's 512-pixel space and are rescaled to `canvas` (h, w)."""
    explicit = "size" in turn
    height, width = (int(turn["size"][0]), int(turn["size"][1])) if explicit else canvas
    sx = 1.0 if explicit else width / CMIGBENCH_BOX_SPACE
    sy = 1.0 if explicit else height / CMIGBENCH_BOX_SPACE
    items = []
    int_ids = False
    for entry in turn.get("objects", []):
        if not isinstance(entry, list | tuple) or len(entry) != 3:
            raise ValueError(f"an object must be [phrase, [x, y, w, h], id], got {entry!r}")
        phrase, box, subject_id = entry
        int_ids = int_ids or isinstance(subject_id, int)
        x, y, w, h = (float(v) for v in box)
        items.append(PlanItem(subject_id=subject_id, phrase=phrase, box=Box(x=x * sx, y=y * sy, w=w * sx, h=h * sy)))
    negative = turn.get("negative")
    plan = TurnPlan(
        height=height,
        width=width,
        caption=turn.get("caption", ""),
        background=turn.get("background", ""),
        negative=None if negative in (None, _NONE_TEXT, "") else negative,
        items=items,
    )
    return plan, TurnFormat(explicit_size=explicit, int_ids=int_ids)


def plan_to_cmigbench(plan: TurnPlan, fmt: TurnFormat | None = None) -> dict[str, Any]:
    fmt = fmt or TurnFormat(explicit_size=True, int_ids=False)
    sx = 1.0 if fmt.explicit_size else CMIGBENCH_BOX_SPACE / plan.width
    sy = 1.0 if fmt.explicit_size else CMIGBENCH_BOX_SPACE / plan.height
    objects = []
    for item in plan.items:
        box = item.box
        coords = [_number(_round(v)) for v in (box.x * sx, box.y * sy, box.w * sx, box.h * sy)]
        subject_id: str | int = (
            int(item.subject_id) if fmt.int_ids and not is_component(item.subject_id) else item.subject_id
        )
        objects.append([item.phrase, coords, subject_id])
    out: dict[str, Any] = {}
    if fmt.explicit_size:
        out["size"] = [plan.height, plan.width]
    out.update(
        caption=plan.caption,
        objects=objects,
        background=plan.background,
        negative=plan.negative if plan.negative is not None else _NONE_TEXT,
    )
    return out


def _round(value: float) -> float:
    rounded = round(value, 6)
    return rounded if math.isfinite(rounded) else value


class Dialogue(BaseModel):
    """One dialogue of a CMIGBench-form file: turns in order, plus any extra keys kept verbatim."""

    name: str
    turns: list[TurnPlan]
    formats: list[TurnFormat]
    turn_keys: list[str]
    extra: dict[str, Any] = Field(default_factory=dict)


def turn_number(key: str) -> int | None:
    """'turn 3' → 3 (compared as numbers, never as strings); other keys → None."""
    parts = key.split()
    if len(parts) == 2 and parts[0] == "turn" and parts[1].isdigit():
        return int(parts[1])
    return None


def load_dialogues(source: str | Path | dict[str, Any], canvas: tuple[int, int] = (512, 512)) -> list[Dialogue]:
    data = json.loads(Path(source).read_text()) if not isinstance(source, dict) else source
    dialogues = []
    for name, body in data.items():
        numbered = sorted(
            ((turn_number(key), key) for key in body if turn_number(key) is not None), key=lambda pair: pair[0]
        )
        turns, formats, keys = [], [], []
        for _, key in numbered:
            plan, fmt = plan_from_cmigbench(body[key], canvas=canvas)
            turns.append(plan)
            formats.append(fmt)
            keys.append(key)
        extra = {key: value for key, value in body.items() if turn_number(key) is None}
        dialogues.append(Dialogue(name=name, turns=turns, formats=formats, turn_keys=keys, extra=extra))
    return dialogues


def dump_dialogues(dialogues: list[Dialogue]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dialogue in dialogues:
        body: dict[str, Any] = dict(dialogue.extra)
        for key, plan, fmt in zip(dialogue.turn_keys, dialogue.turns, dialogue.formats, strict=True):
            body[key] = plan_to_cmigbench(plan, fmt)
        out[dialogue.name] = body
    return out
