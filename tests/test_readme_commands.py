"""Every command the README shows is run by a test: `bash scripts/demo.sh` by test_readme_demo.py, its
`--help` by test_demo_script.py; here every `studio …` line is parsed by the real CLI (with `--help`, so
nothing that needs a GPU or a server runs) and the Python SDK example runs against a live server."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.app import create_app
from entrypoints.cli import app
from entrypoints.server import BackgroundServer, free_port
from tests.api.conftest import make_service

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def studio_commands() -> list[str]:
    lines = [line.split("  #")[0].strip() for block in code_blocks("bash") for line in block.splitlines()]
    return [line for line in lines if line.startswith("studio ")]


def test_the_readme_shows_studio_commands() -> None:
    commands = studio_commands()
    assert any(c.startswith("studio chat") and "--size" in c for c in commands)
    assert any(c.startswith("studio --data-dir") for c in commands)


@pytest.mark.parametrize("command", studio_commands())
def test_every_readme_studio_command_parses(command: str) -> None:
    """Unknown commands or options fail here: click parses every argument before it answers --help."""
    result = CliRunner().invoke(app, [*shlex.split(command)[1:], "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_every_readme_script_exists() -> None:
    lines = [line for block in code_blocks("bash") for line in block.splitlines()]
    scripts = {line.split()[1] for line in lines if line.startswith("bash ")}
    assert scripts and all((ROOT / script).is_file() for script in scripts)


def test_the_readme_sdk_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (example,) = [block for block in code_blocks("python") if "StudioClient(" in block]
    service, _ = make_service(tmp_path / "server", port=free_port())
    key = service.db.create_key("readme")
    monkeypatch.chdir(tmp_path)
    with BackgroundServer(service.settings, app=create_app(service)) as server:
        exec(example.replace("http://127.0.0.1:8000", server.url).replace("sk-studio-…", key), {})
    assert (tmp_path / "turn1.png").read_bytes().startswith(b"\x89PNG")


def test_the_readme_explicit_plan_is_posted_as_its_curl_line_says(tmp_path: Path) -> None:
    """The Presets section's `{"plan": …}` body, sent to the path of its curl line, is accepted whole."""
    import json

    import httpx

    from api.client import StudioClient
    from studio.plan import TurnPlan

    (block,) = [b for b in code_blocks("json") if '"plan"' in b]
    body = json.loads(block)
    plan = TurnPlan.model_validate(body["plan"])
    assert plan.items and all(item.box is not None for item in plan.items)
    (curl,) = [line for b in code_blocks("bash") for line in b.splitlines() if line.startswith("curl ")]
    path = re.search(r"http://127\.0\.0\.1:8000(\S+)", curl)
    assert path is not None and "-X POST" in curl
    service, _ = make_service(tmp_path / "server", port=free_port())
    key = service.db.create_key("readme")
    with (
        BackgroundServer(service.settings, app=create_app(service)) as server,
        StudioClient(server.url, api_key=key) as client,
    ):
        session = client.create_session(height=plan.height, width=plan.width)
        url = server.url + path.group(1).replace("$SESSION", session.id)
        response = httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 202, response.text
        turn = client.wait(client.get_turn(session.id, response.json()["index"]), timeout=30)
    assert turn.plan is not None and turn.plan.items == plan.items and turn.plan.caption == plan.caption


@pytest.mark.parametrize("index", range(len(code_blocks("toml"))))
def test_every_readme_toml_example_loads(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from studio.settings import Settings

    config = tmp_path / "studio.toml"
    config.write_text(code_blocks("toml")[index])
    monkeypatch.setenv("STUDIO_CONFIG_FILE", str(config))
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    settings = Settings()
    preset = settings.preset()
    assert preset.base is not None and settings.default_preset in settings.presets
