"""Reference controls in the shared vocabulary: validation, which layer wins, what a turn's DrawJob carries,
and the memory rules of uploads (docs/reference_controls.md)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from studio.draw import DrawJob, DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.reference_controls import ReferenceControls, resolve_controls
from studio.reference_memory import keep_user_fields, uploaded_subject
from studio.rejections import RequestRejected
from studio.storage.images import MemoryImageStore
from studio.subjects import ReferenceSource, Subject
from studio.turn_steps import build_draw_job


def _item(**controls: object) -> PlanItem:
    return PlanItem(subject_id="1", phrase="a girl", box=Box(x=0, y=0, w=32, h=32), **controls)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("reference_scale", -0.1),
        ("reference_scale", 5.5),
        ("reference_scale", float("nan")),
        ("reference_window", (0.5, 0.5)),
        ("reference_window", (0.8, 0.2)),
        ("reference_window", (-0.1, 0.5)),
        ("reference_window", (0.0, 1.5)),
        ("reference_combine", "concat"),
    ],
)
def test_bad_controls_are_refused_naming_the_field(field: str, value: object) -> None:
    for build in (lambda: _item(**{field: value}), lambda: Subject(id="1", name="girl", **{field: value})):
        with pytest.raises(ValidationError) as caught:
            build()
        assert caught.value.errors()[0]["loc"][0] == field


def test_the_plan_item_wins_then_the_memory_then_the_default() -> None:
    memory = Subject(id="1", name="girl", reference_scale=0.5, reference_combine="tokens")
    item = _item(reference_scale=2.0)
    assert resolve_controls(item, memory) == ReferenceControls(
        reference_scale=2.0, reference_window=(0.0, 1.0), reference_combine="tokens"
    )
    assert resolve_controls(_item(), None) == ReferenceControls()
    assert resolve_controls(_item(), None).is_default
    assert not ReferenceControls(reference_window=(0.0, 0.5)).is_default


def test_a_job_carries_the_memorys_references_controls_and_the_style_image() -> None:
    images = MemoryImageStore()
    main, second, third, style = (images.put(bytes([i]) * 8) for i in range(4))
    subjects = [
        Subject(
            id="1",
            name="girl",
            reference_image_id=main,
            more_reference_image_ids=[second, third],
            reference_window=(0.0, 0.5),
        ),
        Subject(id="2", name="dog", reference_image_id=second),
    ]
    plan = TurnPlan(items=[_item(), PlanItem(subject_id="2", phrase="a dog", box=Box(x=40, y=0, w=32, h=32))])
    settings = DrawSettings(style_reference={"image_id": style, "scale": 0.4})
    job = build_draw_job(plan, subjects, settings, images)
    assert job.references == {"1": images.get(main), "2": images.get(second)}
    assert job.more_references == {"1": [images.get(second), images.get(third)]}
    assert job.reference_controls == {"1": ReferenceControls(reference_window=(0.0, 0.5))}
    assert job.style_reference == images.get(style)
    plain = build_draw_job(
        plan,
        [s.model_copy(update={"more_reference_image_ids": [], "reference_window": None}) for s in subjects],
        DrawSettings(),
        images,
    )
    assert plain.more_references == {} and plain.reference_controls == {} and plain.style_reference is None


def test_more_references_need_a_main_reference_and_are_bounded() -> None:
    plan = TurnPlan(items=[_item()])
    with pytest.raises(ValidationError, match="without a main reference"):
        DrawJob(plan=plan, more_references={"1": [b"x"]})
    with pytest.raises(ValidationError):
        DrawJob(plan=plan, references={"1": b"x"}, more_references={"1": [b"x"] * 8})
    with pytest.raises(ValidationError):
        Subject(id="1", name="girl", more_reference_image_ids=["a"] * 8)


def test_an_added_upload_joins_the_references_and_a_plain_upload_replaces_them() -> None:
    first = uploaded_subject(None, "1", "girl", "", "img-a", add=True)
    assert first.reference_image_id == "img-a" and first.more_reference_image_ids == []
    assert first.reference_source == ReferenceSource.UPLOAD
    tuned = first.model_copy(update={"reference_scale": 0.3, "anchor_cache_id": "cache"})
    second = uploaded_subject(tuned, "1", "girl", "", "img-b", add=True)
    assert (second.reference_image_id, second.more_reference_image_ids) == ("img-a", ["img-b"])
    assert second.reference_scale == 0.3, "the controls are kept"
    assert second.anchor_cache_id is None, "another reference changes the subject's look: its anchor cache is stale"
    replaced = uploaded_subject(second, "1", "girl", "", "img-c", add=False)
    assert (replaced.reference_image_id, replaced.more_reference_image_ids) == ("img-c", [])
    assert replaced.reference_scale == 0.3 and replaced.anchor_cache_id is None
    full = second.model_copy(update={"more_reference_image_ids": [f"m{i}" for i in range(7)]})
    with pytest.raises(RequestRejected, match=r"^add: "):
        uploaded_subject(full, "1", "girl", "", "img-d", add=True)


def test_a_finished_turn_keeps_the_user_only_fields_of_the_stored_row() -> None:
    stored = Subject(id="1", name="girl", reference_image_id="a", more_reference_image_ids=["b"], reference_scale=0.2)
    turn_view = Subject(id="1", name="girl", reference_image_id="a", refreshed_turn=3)
    merged = keep_user_fields(stored, turn_view)
    assert merged.more_reference_image_ids == ["b"] and merged.reference_scale == 0.2 and merged.refreshed_turn == 3
