"""The shared contracts: CMIGBench round trips and every validation rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from studio.draw import DrawJob, DrawSettings
from studio.geometry import Box
from studio.plan import TurnPlan, dump_dialogues, load_dialogues, plan_from_cmigbench, turn_number
from studio.subjects import Subject
from studio.turns import TurnRequest

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "cmigbench"


def item(subject_id: str, x: float = 10, y: float = 10, w: float = 50, h: float = 50) -> dict:
    return {"subject_id": subject_id, "phrase": f"subject {subject_id}", "box": {"x": x, "y": y, "w": w, "h": h}}


@pytest.mark.parametrize("name", ["story_sample.json", "autostudio_demo.json"])
@pytest.mark.parametrize("canvas", [(512, 512), (1024, 1024), (768, 1024)])
def test_sample_files_round_trip_losslessly(name: str, canvas: tuple[int, int]) -> None:
    source = json.loads((DATA / name).read_text())
    dialogues = load_dialogues(source, canvas=canvas)
    assert dump_dialogues(dialogues) == source
    assert all(len(d.turns) == len(d.turn_keys) > 0 for d in dialogues)


def test_512_space_boxes_are_rescaled_to_the_canvas() -> None:
    turn = {"caption": "c", "objects": [["a cat", [256, 128, 64, 32], 1]], "background": "b", "negative": "None"}
    plan, fmt = plan_from_cmigbench(turn, canvas=(1024, 512))
    assert plan.items[0].box == Box(x=256, y=256, w=64, h=64)  # canvas (h, w) = (1024, 512)
    assert plan.items[0].subject_id == "1" and fmt.int_ids and not fmt.explicit_size
    assert plan.negative is None


def test_turn_names_are_ordered_as_numbers() -> None:
    body = {f"turn {k}": {"caption": str(k), "objects": [], "background": "", "negative": "None"} for k in (10, 2, 1)}
    (dialogue,) = load_dialogues({"d": body})
    assert [plan.caption for plan in dialogue.turns] == ["1", "2", "10"]
    assert turn_number("turn 10") == 10 and turn_number("characters") is None


@pytest.mark.parametrize(
    "box",
    [
        {"x": math.nan, "y": 0, "w": 10, "h": 10},
        {"x": 0, "y": 0, "w": -5, "h": 10},
        {"x": 0, "y": 0, "w": 10, "h": 0},
        {"x": 0, "y": math.inf, "w": 10, "h": 10},
    ],
)
def test_bad_boxes_are_rejected(box: dict) -> None:
    with pytest.raises(ValidationError):
        Box.model_validate(box)


def test_box_wholly_outside_the_canvas_is_rejected_and_partial_is_clipped() -> None:
    with pytest.raises(ValidationError, match="wholly outside"):
        TurnPlan(height=256, width=256, items=[item("1", x=300, y=10)])
    plan = TurnPlan(height=256, width=256, items=[item("1", x=-20, y=200, w=100, h=100)])
    assert plan.items[0].box == Box(x=0, y=200, w=80, h=56)


@pytest.mark.parametrize("side", [100, 63, 0])
def test_canvas_not_multiple_of_8_or_too_small_is_rejected(side: int) -> None:
    with pytest.raises(ValidationError):
        TurnPlan(height=side, width=512)


def test_canvas_over_the_configured_maximum_is_rejected() -> None:
    TurnPlan.model_validate({"height": 1024, "width": 1024})
    with pytest.raises(ValidationError, match="exceeds the maximum of 512"):
        TurnPlan.model_validate({"height": 1024, "width": 1024}, context={"max_canvas_side": 512})
    with pytest.raises(ValidationError, match="exceeds"):
        TurnPlan(height=4096, width=512)


def test_component_without_its_parent_is_rejected() -> None:
    TurnPlan(items=[item("1"), item("1-1")])
    with pytest.raises(ValidationError, match="needs its parent '2'"):
        TurnPlan(items=[item("1"), item("2-1")])


def test_duplicate_ids_in_one_turn_are_rejected() -> None:
    with pytest.raises(ValidationError, match="duplicate"):
        TurnPlan(items=[item("1"), item("1", x=100)])


@pytest.mark.parametrize("bad", ["0", "a", "1-", "1-1-1", "-1", ""])
def test_bad_subject_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ValidationError):
        Subject(id=bad, name="x")


def test_component_subject_gets_its_parent() -> None:
    assert Subject(id="2-1", name="hat").parent_id == "2"
    with pytest.raises(ValidationError):
        Subject(id="2-1", name="hat", parent_id="3")


def test_turn_request_needs_exactly_one_of_message_or_plan() -> None:
    with pytest.raises(ValidationError):
        TurnRequest()
    with pytest.raises(ValidationError):
        TurnRequest(message="hi", plan=TurnPlan())
    assert TurnRequest(message="hi").plan is None


def test_draw_job_rejects_references_of_unplanned_subjects_and_edits_without_an_image() -> None:
    plan = TurnPlan(items=[item("1")])
    with pytest.raises(ValidationError, match="not in the plan"):
        DrawJob(plan=plan, references={"2": b"png"})
    edit = TurnPlan(items=[item("1")], edit={"regenerate_subject_ids": ["1"]})
    with pytest.raises(ValidationError, match="previous image"):
        DrawJob(plan=edit)


def test_draw_job_json_round_trip_keeps_image_bytes() -> None:
    job = DrawJob(plan=TurnPlan(items=[item("1")]), references={"1": b"\x89PNG\x00\xff"}, settings=DrawSettings(seed=3))
    assert DrawJob.model_validate_json(job.model_dump_json()) == job


def test_step_counts_scale_with_steps_unless_set_explicitly() -> None:
    with pytest.raises(ValidationError):
        DrawSettings(steps=5, subject_init_steps=10)
    with pytest.raises(ValidationError):
        DrawSettings(steps=5, refine_step=20)
    scaled = DrawSettings(steps=6)
    assert (scaled.subject_init_steps, scaled.refine_step) == (2, 4)
    assert (DrawSettings().subject_init_steps, DrawSettings().refine_step) == (10, 20)


def test_a_too_long_item_list_is_refused_without_validating_every_item() -> None:
    garbage = [{"not": "an item"}] * 8000  # each would be an error of its own if it were validated
    with pytest.raises(ValidationError) as caught:
        TurnPlan.model_validate({"items": [item(str(i + 1)) for i in range(64)] + garbage})
    assert [(e["type"], e["loc"]) for e in caught.value.errors()] == [("too_long", ("items",))]


@pytest.mark.parametrize("bad", ["\x00", "\x01", "\x08", "\x0b", "\x0c", "\x1f", "\ud800"])
def test_text_fields_refuse_control_characters(bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TurnPlan.model_validate({"caption": f"a{bad}b"})
    assert [e["loc"] for e in caught.value.errors()] == [("caption",)]


def test_text_fields_keep_tab_newline_and_carriage_return() -> None:
    assert TurnPlan(caption="a\tb\nc\r\n").caption == "a\tb\nc\r\n"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e6, -0.1])
def test_fuse_scale_entries_are_finite_and_bounded(value: float) -> None:
    for index in (0, 1):
        fuse = [1.0, 0.0]
        fuse[index] = value
        with pytest.raises(ValidationError) as caught:
            DrawSettings(fuse_scale=fuse)
        assert caught.value.errors()[0]["loc"] == ("fuse_scale", index)
