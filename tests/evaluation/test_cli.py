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


@pytest.fixture
def fake_drawer(monkeypatch: pytest.MonkeyPatch) -> None:
    import entrypoints.runtime as runtime
    from tests.evaluation.fakes import FakeDrawer

    monkeypatch.setattr(runtime, "load_preset_drawer", lambda settings, preset_name: FakeDrawer())


def test_cmigbench_steps_scale_the_other_step_counts_and_keep_subject_init(
    tmp_path: Path, story_file: Path, fake_drawer: None
) -> None:
    out = tmp_path / "run"
    args = ["cmigbench", "--data", str(story_file), "--out", str(out), "--canvas", "64", "--limit-turns", "1"]
    result = CliRunner().invoke(bench_app, [*args, "--steps", "2", "--no-progress"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["subject_init"] is True
    assert (settings["subject_init_steps"], settings["prerender_steps"], settings["refine_step"]) == (1, 1, 1)


def test_a_changed_option_on_an_existing_run_is_refused_in_one_line(
    tmp_path: Path, story_file: Path, fake_drawer: None
) -> None:
    out = tmp_path / "run"
    args = ["cmigbench", "--data", str(story_file), "--out", str(out), "--limit-turns", "1", "--no-progress"]
    assert CliRunner().invoke(bench_app, [*args, "--steps", "2", "--canvas", "64"]).exit_code == 0
    refused = CliRunner().invoke(bench_app, [*args, "--steps", "3", "--canvas", "64"])
    assert refused.exit_code == 2
    assert refused.output.count("\n") == 1 and "--steps 2 (now 3)" in refused.output, refused.output
    assert "prerender" not in refused.output  # the step counts that follow --steps are not listed
    two = CliRunner().invoke(bench_app, [*args, "--steps", "3", "--canvas", "128"])
    assert two.exit_code == 2 and "--canvas 64 (now 128)" in two.output and "--steps 2 (now 3)" in two.output


def test_score_without_the_clip_weights_says_what_to_pass(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_app, ["score", str(tmp_path), "--clip", str(tmp_path / "no-clip-here")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--clip FOLDER" in result.output and "STUDIO_BENCH_CLIP" in result.output
    assert "Traceback" not in result.output


def test_cmigbench_records_the_mechanisms_and_resume_refuses_a_change(
    tmp_path: Path, story_file: Path, fake_drawer: None
) -> None:
    out = tmp_path / "run"
    args = ["cmigbench", "--data", str(story_file), "--out", str(out), "--canvas", "64", "--limit-turns", "1"]
    done = CliRunner().invoke(bench_app, [*args, "--mechanisms", "regional,subject_reference", "--no-progress"])
    assert done.exit_code == 0, done.output
    settings = json.loads((out / "run.json").read_text())["settings"]
    assert settings["mechanisms"] == ["regional", "subject_reference"] and settings["subject_init"] is False
    refused = CliRunner().invoke(bench_app, [*args, "--mechanisms", "regional", "--no-progress"])
    assert refused.exit_code == 2 and "--mechanisms" in refused.output, refused.output
    bad = CliRunner().invoke(bench_app, [*args, "--mechanisms", "regional,nonsense", "--no-progress"])
    assert bad.exit_code == 2 and "nonsense" in bad.output
