"""`studio story FILE` against a served story service with the recording drawer."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from api.app import create_app
from entrypoints.cli import app
from entrypoints.server import BackgroundServer, free_port
from tests.stories.conftest import RecordingDrawer, story_service


def test_story_command_saves_every_round_and_applies_its_options(tmp_path: Path) -> None:
    drawer = RecordingDrawer()
    service = story_service(tmp_path / "server", drawer, port=free_port())
    key = service.db.create_key("cli")
    prompts = tmp_path / "story.json"
    prompts.write_text(json.dumps({"prompts": ["a fox", "a fox swims", "a fox sleeps"], "rounds": 5}))
    out = tmp_path / "frames"
    args = ["--rounds", "2", "--seed", "9", "--style", "watercolor", "--size", "64", "--out", str(out)]
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        result = CliRunner().invoke(
            app, ["story", str(prompts), "--url", server.url, "--api-key", key, *args], terminal_width=200
        )
    assert result.exit_code == 0, result.output
    assert "round 2 done" in result.output and "9 frames saved" in " ".join(result.output.split())
    saved = sorted(str(p.relative_to(out)) for p in out.rglob("*.png"))
    assert saved == [f"round-{r:02d}/frame-{i:03d}.png" for r in range(3) for i in range(3)]
    assert (out / "round-02" / "frame-001.png").read_bytes() == drawer.calls[7][1]
    assert {job.settings.seed for job, _ in drawer.calls} == {9}
    assert all(job.plan.caption.startswith("a watercolor painting of ") for job, _ in drawer.calls)
    assert all(job.plan.height == job.plan.width == 64 for job, _ in drawer.calls)


def test_story_command_reads_one_prompt_per_line_and_refuses_bad_options(tmp_path: Path) -> None:
    prompts = tmp_path / "story.txt"
    prompts.write_text("a fox\n\na fox swims\n")
    result = CliRunner().invoke(app, ["story", str(prompts), "--style", "oil", "--url", "http://127.0.0.1:9"])
    assert result.exit_code != 0 and "style" in result.output
    from entrypoints.cli import _story_file

    assert _story_file(prompts) == {"prompts": ["a fox", "a fox swims"]}
