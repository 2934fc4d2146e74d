"""The runner on the real tiny models: the random-weight SD1.5-shaped drawer and the agents (offline planner).
Small canvases, one step. (The tiny vision locator and CLIP run end to end in test_cli.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from evaluation.runner import RunOptions, run_benchmark
from studio.draw import DrawJob, DrawResult, DrawSettings
from studio.protocols import StepCallback
from studio.settings import Settings

pytest.importorskip("diffusers")
drawer_pkg = pytest.importorskip("drawer")

TINY = DrawSettings(preset="tiny", steps=1, subject_init=False)


class Recording:
    """Wraps a drawer and keeps the jobs it was given."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.jobs: list[DrawJob] = []

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        self.jobs.append(job)
        return self.inner.draw(job, on_step=on_step, cancel=cancel)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def planned_box_drawer() -> object:
    """The tiny drawer with the stand-in locator that finds every subject at its box, so references exist."""
    return drawer_pkg.load_drawer(Settings().preset("tiny"), locator=drawer_pkg.PlannedBoxLocator())


class Interrupt(Exception):
    pass


def test_tiny_drawer_resume_is_byte_identical(tmp_path: Path, story_file: Path, planned_box_drawer: object) -> None:
    options = RunOptions(canvas=64, limit_turns=3, progress=False)
    full = Recording(planned_box_drawer)
    run_benchmark(story_file, tmp_path / "full", drawer=full, settings=TINY, options=options)

    calls = {"n": 0}

    def crash(dialogue: str, turn: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_benchmark(
            story_file, tmp_path / "cut", drawer=planned_box_drawer, settings=TINY, options=options, after_turn=crash
        )
    assert not (tmp_path / "cut" / "dialogue 1" / "turn3.png").exists()
    resumed = Recording(planned_box_drawer)
    summary = run_benchmark(story_file, tmp_path / "cut", drawer=resumed, settings=TINY, options=options)
    assert summary.turns_skipped == 2 and summary.turns_drawn == 1
    for turn in (1, 2, 3):
        name = f"dialogue 1/turn{turn}.png"
        assert (tmp_path / "full" / name).read_bytes() == (tmp_path / "cut" / name).read_bytes(), name
    # turn 3 (eagle 4, lion 3, sparrow 1): lion and sparrow have references from turns 1-2, read back from disk
    assert sorted(resumed.jobs[0].references) == ["1", "3"]
    assert resumed.jobs[0].references == full.jobs[2].references


def test_demo_file_through_the_agents(tmp_path: Path, demo_file: Path, planned_box_drawer: object) -> None:
    agents = pytest.importorskip("agents")
    from studio.storage.images import FileImageStore

    images = FileImageStore(tmp_path / "run" / ".images")
    settings = Settings(data_dir=tmp_path / "data")
    with agents.build_engine(settings, planned_box_drawer, images) as engine:
        summary = run_benchmark(
            demo_file,
            tmp_path / "run",
            engine=engine,
            settings=TINY,
            images=images,
            options=RunOptions(limit_dialogues=1, limit_turns=2, max_side=64, progress=False),
        )
    assert summary.turns_drawn == 2
    record = (tmp_path / "run" / "dialogue 1" / "turn2.json").read_text()
    assert '"message"' in record and (tmp_path / "run" / "dialogue 1" / "turn2.png").exists()
