"""`studio bench cmigbench` and `studio bench score` through typer, on the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluation.cli import bench_app
from evaluation.metrics.clip import ClipScorer, tiny_clip

pytest.importorskip("drawer")
pytest.importorskip("vision")


def test_cmigbench_then_score(tmp_path: Path, story_file: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    args = [
        "cmigbench",
        "--data",
        str(story_file),
        "--out",
        str(out),
        "--task",
        "story",
        "--preset",
        "tiny",
        "--steps",
        "1",
        "--no-subject-init",
        "--canvas",
        "64",
        "--limit-turns",
        "2",
        "--no-progress",
    ]
    result = runner.invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    assert (out / "dialogue 1" / "turn2.png").exists()
    again = runner.invoke(bench_app, args)  # everything is done: nothing is redrawn
    assert again.exit_code == 0 and "0 turns drawn, 2 already done" in again.output

    scored = runner.invoke(
        bench_app,
        [
            "score",
            str(out),
            "--clip",
            "tiny",
            "--detector",
            "tiny",
            "--segmenter",
            "tiny",
            "--device",
            "cpu",
            "--method",
            "tiny-run",
        ],
    )
    assert scored.exit_code == 0, scored.output
    rows = json.loads((out / "scores-story.json").read_text())
    assert rows[0]["method"] == "tiny-run" and rows[0]["task"] == "story"
    assert "| tiny-run |" in (out / "scores-story.md").read_text()


def test_bad_shard_is_refused(tmp_path: Path, story_file: Path) -> None:
    result = CliRunner().invoke(
        bench_app, ["cmigbench", "--data", str(story_file), "--out", str(tmp_path), "--shard", "3/2"]
    )
    assert result.exit_code != 0


def test_clip_loads_from_a_local_folder(tmp_path: Path) -> None:
    """The real loading path (from_pretrained on a folder) gives the same model as the in-memory tiny one."""
    model, processor = tiny_clip()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)  # type: ignore[attr-defined]
    loaded, tiny = ClipScorer.load(str(tmp_path), device="cpu"), ClipScorer.load("tiny")
    texts = ["a library with a sparrow"]
    assert loaded.text_embeddings(texts) == pytest.approx(tiny.text_embeddings(texts), abs=1e-5)


def test_cmigbench_loads_its_drawer_through_the_services_wiring(
    tmp_path: Path, story_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import entrypoints.runtime as runtime
    from tests.evaluation.fakes import FakeDrawer

    loaded: list[tuple[str, int]] = []

    def load_preset_drawer(settings: object, preset_name: str) -> FakeDrawer:
        loaded.append((preset_name, settings.max_subjects))  # type: ignore[attr-defined]
        return FakeDrawer()

    import studio.settings

    monkeypatch.setattr(studio.settings, "get_settings", lambda: studio.settings.Settings(max_subjects=5))
    monkeypatch.setattr(runtime, "load_preset_drawer", load_preset_drawer)
    args = ["cmigbench", "--data", str(story_file), "--out", str(tmp_path / "run"), "--preset", "tiny"]
    result = CliRunner().invoke(bench_app, [*args, "--canvas", "64", "--limit-turns", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert loaded == [("tiny", 5)] and (tmp_path / "run" / "dialogue 1" / "turn1.png").exists()
