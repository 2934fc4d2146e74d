"""`bash scripts/demo.sh --help` answers before anything is installed, and lists `studio demo`'s options."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import typer

from entrypoints.cli import app

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_demo_script_help_installs_nothing(tmp_path: Path, flag: str) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "demo.sh", tmp_path / "scripts" / "demo.sh")
    completed = subprocess.run(
        ["bash", "scripts/demo.sh", flag],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHON": "false"},  # any install attempt would fail
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage: bash scripts/demo.sh") and completed.stderr == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scripts"]  # no .venv


def test_demo_script_help_lists_the_options_of_studio_demo() -> None:
    usage = (ROOT / "scripts" / "demo.sh").read_text()
    listed = set(re.findall(r"^  (--[a-z-]+)", usage, flags=re.MULTILINE))
    demo = typer.main.get_command(app).commands["demo"]  # type: ignore[attr-defined]
    assert listed == {opt for param in demo.params for opt in param.opts if opt != "--help"}
