"""The `studio` CLI: key management and the interactive chat against a running service."""

from __future__ import annotations

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
