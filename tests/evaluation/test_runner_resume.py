"""The runner with a fake drawer: layout on disk, crash-safe resume, memory rebuilt from disk, config checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.layout import RunLayout
from evaluation.records import TurnRecord
from evaluation.runner import RunConfigMismatch, RunOptions, run_benchmark
from studio.draw import DrawSettings
from tests.evaluation.fakes import FakeDrawer

SETTINGS = DrawSettings(steps=2, subject_init=False, subject_init_steps=0)
QUIET = {"progress": False}


class Interrupt(Exception):
    pass


def _crash_after(k: int):
    count = {"n": 0}

    def hook(dialogue: str, turn: int) -> None:
        count["n"] += 1
        if count["n"] == k:
            raise Interrupt(f"crash after {dialogue} turn {turn}")

    return hook


def _pngs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/turn*.png"))}


def test_story_run_writes_every_turn(tmp_path: Path, story_file: Path) -> None:
    drawer = FakeDrawer()
    summary = run_benchmark(story_file, tmp_path, drawer=drawer, settings=SETTINGS, options=RunOptions(**QUIET))
    d = RunLayout(tmp_path).dialogue("dialogue 1")
    assert summary.turns_drawn == 4 and summary.turns_skipped == 0
    for turn in (1, 2, 3, 4):
        record = TurnRecord.model_validate_json(d.record(turn).read_text())
        assert d.image(turn).exists() and record.image_file == f"turn{turn}.png"
        assert all((d.root / c.crop_file).exists() for c in record.crops if c.crop_file)
    assert (d.root / "plan.json").exists() and json.loads(d.memory.read_text())
    # references flow through the shared turn steps: turn 2 reuses the sparrow (1) of turn 1
    assert sorted(drawer.jobs[1].references) == ["1"]
    assert drawer.jobs[0].plan.width == 512  # the 512 box space is drawn on a 512 canvas by default
    # seeds are per dialogue and turn
    assert len({job.settings.seed for job in drawer.jobs}) == 4


def test_canvas_option_and_explicit_size(tmp_path: Path, story_file: Path, demo_file: Path) -> None:
    drawer = FakeDrawer()
    run_benchmark(
        story_file,
        tmp_path / "a",
        drawer=drawer,
        settings=SETTINGS,
        options=RunOptions(canvas=1024, limit_turns=1, **QUIET),
    )
    assert (drawer.jobs[0].plan.height, drawer.jobs[0].plan.width) == (1024, 1024)
    box = drawer.jobs[0].plan.items[0].box
    assert (box.x, box.w) == (230, 178)  # [115, 170, 89, 59] doubled
    drawer = FakeDrawer()
    run_benchmark(
        demo_file,
        tmp_path / "b",
        drawer=drawer,
        settings=SETTINGS,
        options=RunOptions(dialogues=["dialogue 3"], limit_turns=2, **QUIET),
    )
    assert [(j.plan.height, j.plan.width) for j in drawer.jobs] == [(768, 1024), (512, 1024)]


def test_interrupted_run_resumes_to_identical_outputs(tmp_path: Path, demo_file: Path) -> None:
    options = RunOptions(limit_dialogues=2, limit_turns=3, max_side=128, **QUIET)
    full = FakeDrawer()
    run_benchmark(demo_file, tmp_path / "full", drawer=full, settings=SETTINGS, options=options)

    with pytest.raises(Interrupt):
        run_benchmark(
            demo_file,
            tmp_path / "cut",
            drawer=FakeDrawer(),
            settings=SETTINGS,
            options=options,
            after_turn=_crash_after(2),
        )
    resumed = FakeDrawer()
    summary = run_benchmark(demo_file, tmp_path / "cut", drawer=resumed, settings=SETTINGS, options=options)

    assert summary.turns_skipped == 2 and summary.turns_drawn == 4
    assert _pngs(tmp_path / "full") == _pngs(tmp_path / "cut")
    # the first job after the restart (dialogue 1, turn 3) carries references rebuilt from turns 1-2 on disk
    first = resumed.jobs[0]
    assert sorted(first.references) == ["1", "2"]
    assert first.references == full.jobs[2].references


def test_resume_without_rebuild_loses_the_references(tmp_path: Path, story_file: Path) -> None:
    """--official-quirks restarts with an empty memory, as the original runner does: the resumed turn gets no
    reference and its picture differs from an uninterrupted run."""
    options = RunOptions(official_quirks=True, **QUIET)
    full = FakeDrawer()
    run_benchmark(story_file, tmp_path / "full", drawer=full, settings=SETTINGS, options=options)
    with pytest.raises(Interrupt):
        run_benchmark(
            story_file,
            tmp_path / "cut",
            drawer=FakeDrawer(),
            settings=SETTINGS,
            options=options,
            after_turn=_crash_after(1),
        )
    resumed = FakeDrawer()
    run_benchmark(story_file, tmp_path / "cut", drawer=resumed, settings=SETTINGS, options=options)
    assert full.jobs[1].references and not resumed.jobs[0].references
    assert _pngs(tmp_path / "full")["dialogue 1/turn2.png"] != _pngs(tmp_path / "cut")["dialogue 1/turn2.png"]


def test_turn_without_its_record_is_redrawn(tmp_path: Path, story_file: Path) -> None:
    run_benchmark(story_file, tmp_path, drawer=FakeDrawer(), settings=SETTINGS, options=RunOptions(**QUIET))
    d = RunLayout(tmp_path).dialogue("dialogue 1")
    d.record(3).unlink()  # a crash between writing the image and the record
    d.image(4).write_bytes(b"torn")  # and a damaged later image
    drawer = FakeDrawer()
    summary = run_benchmark(story_file, tmp_path, drawer=drawer, settings=SETTINGS, options=RunOptions(**QUIET))
    assert summary.turns_skipped == 2 and summary.turns_drawn == 2
    assert [job.settings.seed for job in drawer.jobs] == [
        TurnRecord.model_validate_json(d.record(t).read_text()).seed for t in (3, 4)
    ]


def test_failure_writes_no_done_marker(tmp_path: Path, story_file: Path) -> None:
    with pytest.raises(RuntimeError):
        run_benchmark(
            story_file, tmp_path, drawer=FakeDrawer(fail_on_call=2), settings=SETTINGS, options=RunOptions(**QUIET)
        )
    d = RunLayout(tmp_path).dialogue("dialogue 1")
    assert d.record(1).exists() and not d.record(2).exists() and d.error.exists()
    summary = run_benchmark(story_file, tmp_path, drawer=FakeDrawer(), settings=SETTINGS, options=RunOptions(**QUIET))
    assert summary.turns_drawn == 3 and not d.error.exists()


def test_keep_going_records_the_error(tmp_path: Path, story_file: Path) -> None:
    summary = run_benchmark(
        story_file,
        tmp_path,
        drawer=FakeDrawer(fail_on_call=1),
        settings=SETTINGS,
        options=RunOptions(keep_going=True, **QUIET),
    )
    assert [e.dialogue for e in summary.errors] == ["dialogue 1"]


def test_resume_with_other_settings_is_refused(tmp_path: Path, story_file: Path) -> None:
    run_benchmark(
        story_file, tmp_path, drawer=FakeDrawer(), settings=SETTINGS, options=RunOptions(limit_turns=1, **QUIET)
    )
    with pytest.raises(RunConfigMismatch, match="settings"):
        run_benchmark(
            story_file,
            tmp_path,
            drawer=FakeDrawer(),
            settings=SETTINGS.model_copy(update={"steps": 3}),
            options=RunOptions(limit_turns=1, **QUIET),
        )


def test_crash_while_writing_the_picture_leaves_no_done_marker(
    tmp_path: Path, story_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from studio import atomic

    real_write = atomic.write_bytes

    def failing(path: Path, data: bytes) -> None:
        if path.name == "turn2.png":
            raise OSError("disk full")
        real_write(path, data)

    monkeypatch.setattr(atomic, "write_bytes", failing)
    with pytest.raises(OSError):
        run_benchmark(story_file, tmp_path / "cut", drawer=FakeDrawer(), settings=SETTINGS, options=RunOptions(**QUIET))
    d = RunLayout(tmp_path / "cut").dialogue("dialogue 1")
    assert d.record(1).exists() and not d.record(2).exists() and not d.image(2).exists()
    monkeypatch.setattr(atomic, "write_bytes", real_write)
    summary = run_benchmark(
        story_file, tmp_path / "cut", drawer=FakeDrawer(), settings=SETTINGS, options=RunOptions(**QUIET)
    )
    run_benchmark(story_file, tmp_path / "full", drawer=FakeDrawer(), settings=SETTINGS, options=RunOptions(**QUIET))
    assert summary.turns_skipped == 1 and _pngs(tmp_path / "cut") == _pngs(tmp_path / "full")
