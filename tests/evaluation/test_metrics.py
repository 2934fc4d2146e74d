"""Each metric on constructed inputs with known answers, with the tiny random-weight CLIP."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluation.metrics import editing as ed
from evaluation.metrics.clip import ClipScorer, cosine
from evaluation.metrics.fid import frechet_distance
from evaluation.metrics.story import (
    TurnCrops,
    ccs,
    consistency_pairs,
    dialogue_fid,
    dialogue_tis,
    tis_prompt,
)
from studio.geometry import Box


@pytest.fixture(scope="module")
def clip() -> ClipScorer:
    return ClipScorer.load("tiny")


def noise(seed: int, size: tuple[int, int] = (40, 56)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def turns(*crops: dict[str, Image.Image | None], numbers: list[int] | None = None) -> list[TurnCrops]:
    numbers = numbers or list(range(1, len(crops) + 1))
    return [TurnCrops(turn=n, key=f"turn {n}", crops=c) for n, c in zip(numbers, crops, strict=True)]


# --- CCS -----------------------------------------------------------------------------------------------------


def test_identical_crops_score_one(clip: ClipScorer) -> None:
    a = noise(1)
    value, per_subject = ccs(
        consistency_pairs(turns({"1": a}, {"1": a.copy()}, {"1": a.copy()})), clip.image_embeddings
    )
    assert value == pytest.approx(1.0, abs=1e-6) and per_subject == {"1": pytest.approx(1.0, abs=1e-6)}


def test_different_crops_score_below_one(clip: ClipScorer) -> None:
    value, _ = ccs(consistency_pairs(turns({"1": noise(1)}, {"1": noise(2, (30, 30))})), clip.image_embeddings)
    assert value is not None and value < 0.999


def test_missing_subject_scores_zero(clip: ClipScorer) -> None:
    a = noise(1)
    value, per_subject = ccs(consistency_pairs(turns({"1": a}, {"1": None})), clip.image_embeddings)
    assert value == 0.0 and per_subject == {"1": 0.0}
    value, _ = ccs(consistency_pairs(turns({"1": a}, {"1": a}, {"1": None})), clip.image_embeddings)
    assert value == pytest.approx(0.5, abs=1e-6)


def test_ccs_averages_per_subject_then_over_subjects(clip: ClipScorer) -> None:
    a, b = noise(1), noise(2)
    # subject 1: two later appearances (1, 0); subject 2: one (1) → (0.5 + 1) / 2, not (1 + 0 + 1) / 3
    data = turns({"1": a, "2": b}, {"1": a, "2": b}, {"1": None})
    value, per_subject = ccs(consistency_pairs(data), clip.image_embeddings)
    assert per_subject == {"1": pytest.approx(0.5, abs=1e-6), "2": pytest.approx(1.0, abs=1e-6)}
    assert value == pytest.approx(0.75, abs=1e-6)


def test_single_appearance_gives_no_score(clip: ClipScorer) -> None:
    assert ccs(consistency_pairs(turns({"1": noise(1)}, {"2": noise(2)})), clip.image_embeddings) == (None, {})


def test_reference_is_first_detected_appearance(clip: ClipScorer) -> None:
    a = noise(1)
    # planned in turns 1, 3, 4; missed in 1, found identical in 3 and 4
    data = turns({"1": None}, {"2": noise(5)}, {"1": a}, {"1": a}, numbers=[1, 2, 3, 4])
    fixed, _ = ccs(consistency_pairs(data), clip.image_embeddings)
    assert fixed == pytest.approx(0.5, abs=1e-6)  # one miss (turn 1) + one perfect match (turn 4)
    # the original fills the gap in turn *numbers* (3 - 1 = 2 zeros), counting turn 2 where it was not planned
    official, _ = ccs(consistency_pairs(data, quirks=True), clip.image_embeddings)
    assert official == pytest.approx(1 / 3, abs=1e-6)


def test_never_detected_subject_counts_as_misses(clip: ClipScorer) -> None:
    data = turns({"1": None, "2": noise(2)}, {"1": None, "2": noise(2)})
    fixed, per_subject = ccs(consistency_pairs(data), clip.image_embeddings)
    assert per_subject["1"] == 0.0 and fixed == pytest.approx(0.5, abs=1e-6)
    official, per_subject = ccs(consistency_pairs(data, quirks=True), clip.image_embeddings)
    assert "1" not in per_subject and official == pytest.approx(1.0, abs=1e-6)


def test_turns_are_compared_as_numbers(clip: ClipScorer) -> None:
    a = noise(1)
    data = turns({"1": a}, {"1": a}, numbers=[2, 10])
    assert ccs(consistency_pairs(data), clip.image_embeddings)[0] == pytest.approx(1.0, abs=1e-6)
    # as strings "turn 10" < "turn 2": the original never compares turn 10 with its reference
    assert ccs(consistency_pairs(data, quirks=True), clip.image_embeddings)[0] is None


# --- FID -----------------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero(clip: ClipScorer) -> None:
    images = [noise(i) for i in range(6)]
    feats = clip.image_features(images)
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)
    other = clip.image_features([Image.new("RGB", (40, 56), (255, 255, 255 - 40 * i)) for i in range(6)])
    assert frechet_distance(feats, other) > 1e-3


def test_fid_known_value() -> None:
    a = np.zeros((4, 2))
    a[:, 0] = [-1, 1, -1, 1]
    b = a + np.array([3.0, 0.0])
    assert frechet_distance(a, b) == pytest.approx(9.0)  # same covariance, means 3 apart


def test_fid_matches_torchmetrics_when_installed() -> None:
    torch = pytest.importorskip("torch")
    fid_module = pytest.importorskip("torchmetrics.image.fid")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(40, 8)) * 1.3 + 0.5
    ta, tb = torch.tensor(a), torch.tensor(b)
    expected = fid_module._compute_fid(ta.mean(0), torch.cov(ta.T), tb.mean(0), torch.cov(tb.T))
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-6)


def test_dialogue_fid_pairs_misses_with_black_images(clip: ClipScorer) -> None:
    a = noise(1)
    same = consistency_pairs(turns({"1": a}, {"1": a}, {"1": a}))
    assert dialogue_fid(same, clip.image_features) == pytest.approx(0.0, abs=1e-6)
    missed = consistency_pairs(turns({"1": a}, {"1": a}, {"1": None}))
    assert dialogue_fid(missed, clip.image_features) > 1e-3
    assert dialogue_fid(consistency_pairs(turns({"1": a})), clip.image_features) is None


# --- TIS -----------------------------------------------------------------------------------------------------


def test_tis_prompt_and_average(clip: ClipScorer) -> None:
    assert tis_prompt("A library", ["a sparrow", "a lion"]) == "A library with a sparrow, a lion"
    assert tis_prompt("A library", ["a sparrow", "a lion"], quirks=True) == "A library with a sparrow,a lion,"
    assert dialogue_tis([30.0, 20.0]) == 25.0
    assert dialogue_tis([30.0, 20.0], quirks=True) == 12.5  # the original always divides by 4
    image = clip.image_embeddings([noise(3)])[0]
    text = clip.text_embeddings(["A library with a sparrow"])[0]
    assert cosine(image, text) == pytest.approx(float(image @ text), abs=1e-9)


# --- editing checks ------------------------------------------------------------------------------------------

LEFT = Box(x=10, y=100, w=80, h=80)
RIGHT = Box(x=300, y=100, w=80, h=80)
CENTRE = Box(x=160, y=100, w=80, h=80)


@pytest.mark.parametrize("quirks", [False, True])
def test_spatial_left_of(quirks: bool) -> None:
    caption = "a cat to the left of a dog"
    assert ed.spatial(caption, [ed.Found("a cat", LEFT), ed.Found("a dog", RIGHT)], quirks=quirks) is True
    assert ed.spatial(caption, [ed.Found("a cat", RIGHT), ed.Found("a dog", LEFT)], quirks=quirks) is False
    assert ed.spatial(caption, [ed.Found("a cat", LEFT), ed.Found("a dog", None)], quirks=quirks) is False


def test_spatial_right_of_and_vertical() -> None:
    assert ed.spatial("a cat to the right of a dog", [ed.Found("a cat", RIGHT), ed.Found("a dog", LEFT)]) is True
    assert ed.spatial("a cat to the right of a dog", [ed.Found("a cat", LEFT), ed.Found("a dog", RIGHT)]) is False
    top, bottom = Box(x=100, y=10, w=50, h=50), Box(x=100, y=300, w=50, h=50)
    assert ed.spatial("a bird to the top of a tree", [ed.Found("a bird", top), ed.Found("a tree", bottom)]) is True
    assert ed.spatial("a ball below a table", [ed.Found("a ball", top), ed.Found("a table", bottom)]) is False
    assert ed.spatial("a ball below a table", [ed.Found("a ball", bottom), ed.Found("a table", top)]) is True
    assert ed.spatial("a cat and a dog", [ed.Found("a cat", LEFT), ed.Found("a dog", RIGHT)]) is None


def test_spatial_trailing_words_after_the_object() -> None:
    caption = "a cat sitting to the left of a dog on the grass"
    found = [ed.Found("a cat", LEFT), ed.Found("a dog", RIGHT)]
    assert ed.spatial(caption, found) is True
    assert ed.spatial(caption, found, quirks=True) is False  # the original compares "grass" with "dog"


def test_spatial_middle_is_checked() -> None:
    caption = "a cat in the middle of a dog and a fox"
    inside = [ed.Found("a dog", LEFT), ed.Found("a cat", CENTRE), ed.Found("a fox", RIGHT)]
    outside = [ed.Found("a dog", LEFT), ed.Found("a cat", RIGHT), ed.Found("a fox", CENTRE)]
    assert ed.spatial(caption, inside) is True
    assert ed.spatial(caption, outside) is False
    two_apart = [ed.Found("a cat", LEFT), ed.Found("a sofa", RIGHT)]
    assert ed.spatial("a cat in the middle of a sofa", two_apart) is False
    # the original passes any two found objects, and gives no answer with three
    assert ed.spatial("a cat in the middle of a sofa", two_apart, quirks=True) is True
    assert ed.spatial(caption, outside, quirks=True) is None


def test_attribute_target_and_pass() -> None:
    phrases = ["a dog", "a red car"]
    assert ed.attribute_target("the car turns red", phrases) == "a red car"
    assert ed.attribute_target("something else entirely", phrases) == "a dog"
    assert ed.attribute_target("something else entirely", ["the dog", "the car"], quirks=True) == ""
    assert ed.attribute(1) is True and ed.attribute(0) is False


def test_negative() -> None:
    assert ed.negative("a hat", 0) is True
    assert ed.negative("a hat", 2) is False
    assert ed.negative(None, 0) is None
    assert ed.negative(None, 0, quirks=True) is True


def test_numeracy() -> None:
    three = [Box(x=10 + 100 * i, y=10, w=50, h=50) for i in range(3)]
    assert ed.numeracy(3, three) is True
    assert ed.numeracy(3, three[:2]) is False
    assert ed.numeracy(3, [*three, Box(x=400, y=300, w=50, h=50)]) is False
    duplicated = [*three[:2], Box(x=12, y=10, w=50, h=50)]
    assert ed.numeracy(3, duplicated) is False  # one instance found twice is two apples, not three
    assert ed.numeracy(3, duplicated, quirks=True) is True
