"""Scoring whole run folders with scripted detections (known answers) and the tiny CLIP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from evaluation.metrics.clip import ClipScorer
from evaluation.metrics.detection import LocatorPool
from evaluation.results import EditingScore, ScoreSettings, StoryScore
from evaluation.runner import RunOptions, run_benchmark
from evaluation.scoring import Scorer, score_run, write_scores
from studio.draw import DrawJob, DrawResult, DrawSettings
from studio.images import encode_png
from tests.evaluation.fakes import DetectingLocator, FakeDrawer, ScriptedDetector, ScriptedLocator

SETTINGS = DrawSettings(steps=1, subject_init=False)


class ConstantDrawer:
    """The same grey-gradient picture every turn, so equal boxes give equal crops."""

    def draw(self, job: DrawJob, on_step=None, cancel=None) -> DrawResult:
        image = Image.linear_gradient("L").resize((job.plan.width, job.plan.height)).convert("RGB")
        return DrawResult(image=encode_png(image), width=job.plan.width, height=job.plan.height, seed=0)


@pytest.fixture(scope="module")
def clip() -> ClipScorer:
    return ClipScorer.load("tiny")


def scorer(clip: ClipScorer, locator: object, quirks: bool = False, asked: list | None = None) -> Scorer:
    def factory(box: float, text: float):
        if asked is not None:
            asked.append((box, text))
        return locator

    settings = ScoreSettings(
        clip="tiny", detector="scripted", segmenter="none", official_quirks=quirks, fid_features="tiny CLIP"
    )
    return Scorer(clip=clip, locators=LocatorPool(factory), settings=settings)


def test_story_scores_with_known_answers(tmp_path: Path, story_file: Path, clip: ClipScorer) -> None:
    run_benchmark(
        story_file, tmp_path, drawer=ConstantDrawer(), settings=SETTINGS, options=RunOptions(canvas=128, progress=False)
    )
    # every subject is found at the same box (identical crops), except the lion, never found
    lions = frozenset({"an attentive lion", "an observing lion", "a peaceful lion"})
    locator = ScriptedLocator(default=((10, 10, 60, 70), 0.9), missing=lions)
    asked: list = []
    result = score_run(tmp_path, scorer(clip, locator, asked=asked), method="const")
    assert isinstance(result, StoryScore) and result.method == "const"
    row = result.dialogues[0]
    # sparrow 1.0 (3 later turns), lion 0 (never found, 2 later turns), eagle 1.0; the shelf appears once
    assert row.per_subject_ccs == {"1": pytest.approx(1.0, abs=1e-6), "3": 0.0, "4": pytest.approx(1.0, abs=1e-6)}
    assert result.accs == pytest.approx(2 / 3, abs=1e-6)
    assert result.afid is not None and result.afid >= 0.0
    assert result.atis is not None and row.turns_scored == 4
    assert set(asked) == {(0.5, 0.25)}  # the story's own thresholds
    # the fixed rule asks for the noun phrase, not the last word
    assert [t.name for t in locator.calls[0]] == ["a tiny sparrow", "a library shelf"]

    official = score_run(
        tmp_path,
        scorer(clip, ScriptedLocator(default=((10, 10, 60, 70), 0.9), missing=frozenset({"lion"})), quirks=True),
    )
    assert isinstance(official, StoryScore)
    assert official.accs == pytest.approx(1.0, abs=1e-6)  # never-found subjects drop out in the original

    json_path, md_path = write_scores([result, official], tmp_path)
    table = md_path.read_text()
    assert table.splitlines()[0] == "| Method | aCCS ↑ | aFID ↓ | aTIS ↑ | dialogues |"
    assert "| const | 0.6667 |" in table
    assert json.loads(json_path.read_text())[0]["accs"] == pytest.approx(2 / 3, abs=1e-6)


def test_identical_pictures_have_zero_fid(tmp_path: Path, story_file: Path, clip: ClipScorer) -> None:
    run_benchmark(
        story_file, tmp_path, drawer=ConstantDrawer(), settings=SETTINGS, options=RunOptions(canvas=128, progress=False)
    )
    result = score_run(tmp_path, scorer(clip, ScriptedLocator(default=((0, 0, 64, 64), 0.9))))
    assert isinstance(result, StoryScore)
    assert result.accs == pytest.approx(1.0, abs=1e-6) and result.afid == pytest.approx(0.0, abs=1e-6)


EDITING = {
    "dialogue 1": {
        "turn 1": {
            "caption": "a cat to the left of a dog",
            "background": "a garden",
            "negative": "None",
            "objects": [["a cat", [20, 200, 100, 100], 1], ["a dog", [300, 200, 100, 100], 2]],
        },
        "turn 2": {
            "caption": "the car turns red",
            "background": "a street",
            "negative": "None",
            "objects": [["a dog", [20, 200, 100, 100], 2], ["a red car", [300, 200, 150, 100], 3]],
        },
        "turn 3": {
            "caption": "a man without a hat",
            "background": "a street",
            "negative": "a hat",
            "objects": [["a man", [200, 100, 100, 300], 4]],
        },
        "turn 4": {
            "caption": "three apples",
            "background": "a table",
            "negative": "None",
            "objects": [
                ["an apple", [20, 200, 80, 80], 5],
                ["an apple", [200, 200, 80, 80], 6],
                ["an apple", [380, 200, 80, 80], 7],
            ],
        },
    }
}


def _editing_score(tmp_path: Path, clip: ClipScorer, hits: dict, quirks: bool = False) -> EditingScore:
    run_benchmark(
        EDITING,
        tmp_path,
        drawer=FakeDrawer(),
        settings=SETTINGS,
        options=RunOptions(task="editing", canvas=128, progress=False),
    )
    asked: list = []
    result = score_run(tmp_path, scorer(clip, DetectingLocator(ScriptedDetector(hits)), quirks, asked))
    assert isinstance(result, EditingScore)
    assert set(asked) == {(0.35, 0.25), (0.5, 0.25), (0.8, 0.25)}
    return result


def test_editing_checks_pass(tmp_path: Path, clip: ClipScorer) -> None:
    hits = {
        "a cat": [((5, 50, 30, 80), 0.9)],
        "a dog": [((90, 50, 120, 80), 0.9)],
        "a red car": [((80, 50, 120, 80), 0.55)],
        "a hat": [((60, 20, 70, 30), 0.6)],  # below the negative check's 0.8: not counted
        "an apple": [((5, 50, 25, 70), 0.5), ((50, 50, 70, 70), 0.4), ((95, 50, 115, 70), 0.36)],
    }
    result = _editing_score(tmp_path, clip, hits)
    assert (result.spatial, result.attribute, result.negative, result.numeracy) == (1.0, 1.0, 1.0, 1.0)


def test_editing_checks_fail(tmp_path: Path, clip: ClipScorer) -> None:
    hits = {
        "a cat": [((90, 50, 120, 80), 0.9)],  # the cat is right of the dog
        "a dog": [((5, 50, 30, 80), 0.9)],
        "a red car": [((80, 50, 120, 80), 0.45)],  # below the attribute check's 0.5
        "a hat": [((60, 20, 70, 30), 0.85)],
        "an apple": [((5, 50, 25, 70), 0.5), ((50, 50, 70, 70), 0.3)],  # one apple under 0.35: two, not three
    }
    result = _editing_score(tmp_path, clip, hits)
    assert (result.spatial, result.attribute, result.negative, result.numeracy) == (0.0, 0.0, 0.0, 0.0)
    table = write_scores([result], tmp_path)[1].read_text()
    assert table.splitlines()[0].startswith("| Method | Spatial ↑ | Attribute ↑ | Negative ↑ | Numeracy ↑")


def test_story_crops_are_padded_to_squares_unless_quirks() -> None:
    from evaluation.scoring import crop_box
    from studio.geometry import Box

    image = Image.linear_gradient("L").convert("RGB")
    tall = Box(x=10, y=10, w=20, h=60)
    assert crop_box(image, tall, square=True).size == (60, 60)
    assert crop_box(image, tall, square=False).size == (20, 60)


def test_dialogue_without_a_relation_is_dropped_only_in_quirks_mode() -> None:
    from evaluation.results import EditingDialogueScore
    from evaluation.scoring import aggregate_editing

    rows = [
        EditingDialogueScore(dialogue="a", spatial=None, attribute=True, negative=True, numeracy=True),
        EditingDialogueScore(dialogue="b", spatial=True, attribute=False, negative=True, numeracy=False),
    ]
    settings = ScoreSettings(clip="t", detector="t", segmenter="t", official_quirks=False, fid_features="t")
    fixed = aggregate_editing("m", rows, settings)
    assert (fixed.spatial, fixed.attribute, fixed.numeracy) == (1.0, 0.5, 0.5)
    dropped = [rows[0].model_copy(update={"dropped": True}), rows[1]]
    official = aggregate_editing("m", dropped, settings.model_copy(update={"official_quirks": True}))
    assert (official.spatial, official.attribute, official.numeracy, official.dialogues_scored) == (1.0, 0.0, 0.0, 1)
