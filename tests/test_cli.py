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


def test_chat_options_set_the_session_canvas_and_settings(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path / "server", port=free_port())
    key = service.db.create_key("cli")
    args = ["--size", "96x64", "--steps", "3", "--preset", "tiny", "--seed", "0", "--out", str(tmp_path / "chat")]
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        result = CliRunner().invoke(
            app,
            ["chat", "--url", server.url, "--api-key", key, *args],
            input="a girl on a bench\n\n",
            terminal_width=400,
        )
    assert result.exit_code == 0, result.output
    session = service.db.list_sessions("cli")[0]
    assert (session.width, session.height) == (96, 64)
    assert (session.settings.steps, session.settings.seed, session.settings.prerender_steps) == (3, 0, 2)
    turn = service.db.get_turn(session.id, 1)
    assert turn is not None and turn.request.settings == session.settings
    assert f"images are saved in {(tmp_path / 'chat').resolve()}" in " ".join(result.output.split())


def test_chat_size_must_be_n_or_width_x_height() -> None:
    result = CliRunner().invoke(app, ["chat", "--size", "big"])
    assert result.exit_code == 2 and "--size" in result.output


def test_ctrl_c_during_a_turn_cancels_it_on_the_server_and_returns_to_the_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import entrypoints.cli as cli
    from api.client import StudioClient

    service, engine = make_service(tmp_path / "server", port=free_port())
    key = service.db.create_key("cli")
    engine.hold.clear()  # the first turn "draws" until it is cancelled
    cancels: list[tuple[str, int]] = []
    cancel_turn = StudioClient.cancel_turn

    def spy(self: StudioClient, session_id: str, index: int) -> object:
        cancels.append((session_id, index))
        return cancel_turn(self, session_id, index)

    follow = cli._follow

    def interrupted_once(client: StudioClient, turn: object, progress: object, previews: object = None) -> object:
        if not cancels:
            raise KeyboardInterrupt  # Ctrl-C while waiting for the first turn
        engine.hold.set()
        return follow(client, turn, progress, previews)  # type: ignore[arg-type]

    lines: list[str | type[BaseException]] = ["a girl on a bench", "she smiles", KeyboardInterrupt]

    def typed(prompt: str) -> str:
        line = lines.pop(0)
        if isinstance(line, type):
            raise line()  # Ctrl-C at the prompt quits
        return line

    monkeypatch.setattr(StudioClient, "cancel_turn", spy)
    monkeypatch.setattr(cli, "_follow", interrupted_once)
    monkeypatch.setattr(cli.console, "input", typed)
    out = tmp_path / "chat"
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        result = CliRunner().invoke(
            app, ["chat", "--url", server.url, "--api-key", key, "--size", "64", "--out", str(out)], terminal_width=200
        )
    engine.hold.set()
    assert result.exit_code == 0, result.output
    session_id = service.db.list_sessions("cli")[0].id
    assert cancels == [(session_id, 1)]
    assert "turn 1 cancelled" in result.output
    first = service.db.get_turn(session_id, 1)
    assert first is not None and first.status == "failed" and "cancel" in (first.error or "")
    assert sorted(p.name for p in out.glob("*.png")) == ["turn2.png"]  # the chat went on after the cancel


def test_the_data_folder_is_the_same_from_any_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _private_user_data_folder: Path
) -> None:
    import uvicorn

    import api.app
    import entrypoints.runtime

    monkeypatch.delenv("STUDIO_DATA_DIR", raising=False)
    runner = CliRunner()
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    created = runner.invoke(app, ["keys", "create", "--tenant", "alice"])
    assert created.exit_code == 0, created.output
    expected = _private_user_data_folder / "autostudio"
    assert f"data folder: {expected}" in created.output
    monkeypatch.chdir(tmp_path / "there")
    listed = runner.invoke(app, ["keys", "list"], terminal_width=200)
    assert "alice" in listed.output and f"data folder: {expected}" in listed.output
    served: list[Path] = []
    monkeypatch.setattr(entrypoints.runtime, "build_service", lambda settings: served.append(settings.data_dir))
    monkeypatch.setattr(api.app, "create_app", lambda service: None)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert served == [expected]
    assert not (tmp_path / "here" / "studio-data").exists() and not (tmp_path / "there" / "studio-data").exists()


def test_data_dir_option_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "from-env"))
    result = CliRunner().invoke(app, ["--data-dir", str(tmp_path / "chosen"), "keys", "create"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "chosen" / "studio.db").exists() and not (tmp_path / "from-env").exists()
    assert f"data folder: {tmp_path / 'chosen'}" in " ".join(result.output.split())
