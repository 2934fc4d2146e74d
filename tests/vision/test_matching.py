"""Matching on synthetic detections: best score × IoU, optimal same-name assignment, components inside
their parent, honest misses."""

from __future__ import annotations

from studio.geometry import Box
from studio.protocols import LocateTarget
from tests.vision.conftest import target
from vision.matching import Detection, MatchSettings, map_box, match_targets, nms, normalize_name


def det(label: str, x: float, y: float, w: float, h: float, score: float) -> Detection:
    return Detection(label=label, box=Box(x=x, y=y, w=w, h=h), score=score)


def test_best_score_times_iou_beats_an_earlier_worse_hit() -> None:
    planned = target("1", "girl", 100, 100, 100, 200)
    early_far = det("girl", 300, 100, 100, 200, 0.95)  # listed first, best score, no overlap
    early_loose = det("girl", 150, 100, 100, 200, 0.9)  # overlaps by 1/3
    good = det("girl", 105, 100, 100, 200, 0.6)  # overlaps almost fully
    result = match_targets([planned], [early_far, early_loose, good])
    assert result["1"].detection == good
    assert result["1"].iou_with_plan == planned.planned_box.iou(good.box)


def test_score_decides_between_equally_placed_hits() -> None:
    planned = target("1", "dog", 0, 0, 50, 50)
    weak = det("dog", 0, 0, 50, 50, 0.4)
    strong = det("dog", 0, 0, 50, 50, 0.8)
    assert match_targets([planned], [weak, strong])["1"].detection == strong


def test_missing_subject_is_reported_and_others_keep_their_own_detection() -> None:
    targets = [
        target("1", "girl", 0, 0, 100, 100),
        target("2", "boy", 100, 0, 100, 100),
        target("3", "dog", 200, 0, 100, 100),
    ]
    girl, dog = det("girl", 0, 0, 100, 100, 0.8), det("dog", 200, 0, 100, 100, 0.7)
    result = match_targets(targets, [girl, dog])
    assert result["1"].detection == girl
    assert result["3"].detection == dog
    assert result["2"].detection is None
    assert "boy" in (result["2"].reason or "")


def test_a_detection_away_from_the_planned_box_is_not_taken() -> None:
    planned = target("1", "cat", 0, 0, 50, 50)
    result = match_targets([planned], [det("cat", 200, 200, 50, 50, 0.99)])
    assert not result["1"].found
    assert "IoU" in (result["1"].reason or "")


def test_same_name_subjects_assigned_by_position_even_when_listed_swapped() -> None:
    left = det("girl", 0, 0, 100, 200, 0.9)
    right = det("girl", 200, 0, 100, 200, 0.5)
    # the plan lists the right-hand girl first; detections come left first
    targets = [target("2", "girl", 190, 0, 100, 200), target("1", "girl", 10, 0, 100, 200)]
    result = match_targets(targets, [left, right])
    assert result["1"].detection == left
    assert result["2"].detection == right


def test_same_name_assignment_is_optimal_not_greedy() -> None:
    # A overlaps both detections (d1 a bit better); B overlaps only d1. Greedy A→d1 would leave B empty.
    d1 = det("boy", 50, 0, 100, 100, 0.9)
    d2 = det("boy", 0, 0, 100, 100, 0.9)
    a = target("1", "boy", 35, 0, 100, 100)
    b = target("2", "boy", 110, 0, 100, 100)
    assert a.planned_box.iou(d1.box) > a.planned_box.iou(d2.box)
    assert b.planned_box.iou(d2.box) == 0.0
    result = match_targets([a, b], [d1, d2])
    assert result["1"].detection == d2
    assert result["2"].detection == d1


def test_one_detection_never_serves_two_subjects() -> None:
    only = det("girl", 0, 0, 100, 100, 0.9)
    result = match_targets([target("1", "girl", 0, 0, 100, 100), target("2", "girl", 10, 0, 100, 100)], [only])
    assert result["1"].detection == only
    assert result["2"].detection is None
    assert "fit subjects ['1'] better" in (result["2"].reason or "")


def test_component_is_found_inside_its_parent_not_elsewhere() -> None:
    girl = target("1", "girl", 0, 0, 100, 200)
    boy = target("2", "boy", 100, 0, 100, 200)
    # a sloppy plan: the girl's hat box straddles her right edge, towards the boy
    hat = LocateTarget(subject_id="1-1", name="hat", planned_box=Box(x=80, y=0, w=40, h=30), parent_id="1")
    detections = [
        det("girl", 0, 0, 100, 200, 0.9),
        det("boy", 100, 0, 100, 200, 0.9),
        det("hat", 100, 0, 40, 30, 0.95),  # the boy's hat: higher score, overlaps the planned hat box
        det("hat", 40, 0, 40, 30, 0.5),  # inside the girl's box
    ]
    assert hat.planned_box.iou(detections[2].box) > hat.planned_box.iou(detections[3].box)
    result = match_targets([hat, girl, boy], detections)
    assert result["1-1"].detection == detections[3]


def test_component_without_a_matching_hit_inside_parent_is_missing() -> None:
    girl = target("1", "girl", 0, 0, 100, 200)
    hat = target("1-1", "hat", 30, 0, 40, 30)  # parent deduced from the id
    result = match_targets([girl, hat], [det("girl", 0, 0, 100, 200, 0.9), det("hat", 300, 0, 40, 30, 0.9)])
    assert result["1"].found
    assert not result["1-1"].found
    assert "inside its parent" in (result["1-1"].reason or "")


def test_component_of_a_missing_parent_is_missing() -> None:
    result = match_targets(
        [target("1", "girl", 0, 0, 100, 200), target("1-1", "hat", 30, 0, 40, 30)], [det("hat", 30, 0, 40, 30, 0.9)]
    )
    assert not result["1-1"].found
    assert "parent '1'" in (result["1-1"].reason or "")


def test_components_follow_their_parents_detected_position() -> None:
    planned_parent = Box(x=0, y=0, w=100, h=200)
    detected_parent = Box(x=50, y=10, w=200, h=400)
    assert map_box(Box(x=10, y=20, w=30, h=40), planned_parent, detected_parent) == Box(x=70, y=50, w=60, h=80)
    # two hats inside the detected parent: the one where the plan puts it (after the shift) wins
    girl = target("1", "girl", 0, 0, 100, 200)
    hat = target("1-1", "hat", 0, 0, 50, 50)
    detections = [
        det("girl", 50, 0, 100, 200, 0.9),  # the girl came out 50 px to the right of her plan
        det("hat", 100, 150, 50, 50, 0.9),  # inside her box, but not where her hat belongs
        det("hat", 50, 0, 50, 50, 0.8),  # where the planned hat lands once shifted with her
    ]
    result = match_targets([girl, hat], detections, MatchSettings(min_iou=0.0))
    assert result["1-1"].detection == detections[2]


def test_names_are_normalized_and_nms_keeps_the_best_duplicate() -> None:
    assert normalize_name("  Little  Girl. ") == "little girl"
    a, b = det("girl", 0, 0, 100, 100, 0.6), det("girl", 2, 0, 100, 100, 0.9)
    other = det("boy", 0, 0, 100, 100, 0.5)
    assert nms([a, b, other], 0.7) == [b, other]
    result = match_targets([target("1", "Girl", 0, 0, 100, 100)], [a])
    assert result["1"].detection == a
