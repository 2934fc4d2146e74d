"""The README's demo command, run as a user runs it (smallest settings), and its outputs checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_readme_demo_command_runs_the_service_and_leaves_images_and_a_summary(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/demo.sh" in readme
    out = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env["PYTHON"] = sys.executable
    completed = subprocess.run(
        ["bash", "scripts/demo.sh", "--out", str(out), "--steps", "2", "--size", "64", "--turns", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [turn["status"] for turn in summary["turns"]] == ["done", "done"]
    first_ids = {item["subject_id"] for item in summary["turns"][0]["plan"]["items"]}
    assert first_ids == {"1", "2"}  # "a girl and a boy": two subjects with stable ids
    assert {item["subject_id"] for item in summary["turns"][1]["plan"]["items"]} <= first_ids
    for turn in summary["turns"]:
        image = Image.open(turn["images"][0])
        assert image.format == "PNG" and image.size == (64, 64)
    assert {subject["id"] for subject in summary["subjects"]} >= {"1", "2"}
    assert (out / "data" / "studio.db").exists()
    assert Image.open(out / "contact-sheet.png").format == "PNG"
