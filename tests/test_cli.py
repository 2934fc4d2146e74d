"""The `studio` CLI: key management and the interactive chat against a running service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.app import create_app
from entrypoints.cli import app
from entrypoints.server import BackgroundServer, free_port
from tests.api.conftest import make_service


def test_keys_create_list_revoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--tenant", "alice", "--name", "laptop"])
    assert created.exit_code == 0, created.output
    key = next(word for word in created.output.split() if word.startswith("sk-studio-"))
    listed = runner.invoke(app, ["keys", "list"], terminal_width=200)
    assert "alice" in listed.output and key not in listed.output
    from studio.storage.database import Database

    db = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    assert db.tenant_for_key(key) == "alice"
    key_id = db.list_keys()[0]["id"]
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert db.tenant_for_key(key) is None
    assert runner.invoke(app, ["keys", "revoke", "nope"]).exit_code != 0


def test_chat_repl_shows_layouts_and_saves_images(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path / "server", port=free_port())
    key = service.db.create_key("cli")
    out = tmp_path / "chat"
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        result = CliRunner().invoke(
            app,
            ["chat", "--url", server.url, "--api-key", key, "--height", "64", "--width", "64", "--out", str(out)],
            input="a girl on a bench\nplease fail\nshe smiles\n\n",
            terminal_width=200,
        )
    assert result.exit_code == 0, result.output
    assert "turn 1: done" in result.output and "a girl" in result.output
    text = " ".join(result.output.split())  # rich wraps lines to the terminal's width
    assert "turn 2 of session" in text and "failed: scripted planner failure" in text  # shown; the REPL goes on
    assert sorted(p.name for p in out.glob("*.png")) == ["turn1.png", "turn3.png"]


@pytest.fixture
def scripted_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """`studio demo` against the scripted engine (tests/api/conftest.py): its second line fails the turn."""
    import entrypoints.cli as cli
    import entrypoints.runtime as runtime

    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "unused"))
    monkeypatch.setattr(cli, "DEMO_DIALOGUE", ["a girl on a bench", "please fail", "never sent"])
    monkeypatch.setattr(runtime, "build_service", lambda settings: make_service(settings.data_dir)[0])
    return tmp_path / "demo"


def test_demo_writes_the_summary_with_the_failed_turn_before_exiting(scripted_demo: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--out", str(scripted_demo), "--steps", "2"], terminal_width=200)
    assert result.exit_code == 1, result.output
    summary = json.loads((scripted_demo / "summary.json").read_text())
    assert summary["status"] == "failed" and "scripted planner failure" in summary["error"]
    assert [(t["index"], t["status"]) for t in summary["turns"]] == [(1, "done"), (2, "failed")]
    assert summary["turns"][1]["error"] == "scripted planner failure" and summary["seconds"] >= 0


def test_demo_writes_the_summary_when_interrupted(scripted_demo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import entrypoints.cli as cli

    follow = cli._follow
    calls: list[int] = []

    def interrupted_at_the_second_turn(*args: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return follow(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cli, "_follow", interrupted_at_the_second_turn)
    result = CliRunner().invoke(app, ["demo", "--out", str(scripted_demo), "--steps", "2"], terminal_width=200)
    assert result.exit_code != 0
    summary = json.loads((scripted_demo / "summary.json").read_text())
    assert summary["status"] == "interrupted" and [t["status"] for t in summary["turns"]] == ["done"]
