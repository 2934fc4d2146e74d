"""`studio bench cmigbench --workers celery`: the benchmark's turns go to the drawer pool, one dialogue per live
worker at a time, and a second run resumes (nothing drawn twice)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evaluation.cli import bench_app
from studio.settings import DrawerBackendSettings, get_settings
from tests.workers.conftest import Workers, settings_env, wait_until

DIALOGUES = 4


def story(path: Path) -> Path:
    turn = {
        "caption": "a tiny sparrow flutters near a shelf",
        "objects": [["a tiny sparrow", [115, 170, 89, 59], 1], ["a library shelf", [215, 165, 171, 171], 2]],
        "background": "a silent library",
        "negative": "None",
    }
    body = {
        f"dialogue {n}": {"characters": ["sparrow"], "scene": ["library"], "turn 1": turn, "turn 2": turn}
        for n in range(1, DIALOGUES + 1)
    }
    path.write_text(json.dumps(body))
    return path


@pytest.fixture
def pool_environment(pool_settings: DrawerBackendSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in settings_env(pool_settings).items():
        if name.startswith("STUDIO_"):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cmigbench_runs_on_the_worker_pool_and_resumes(
    workers: Workers, pool_environment: None, tmp_path: Path
) -> None:
    first, second = workers.start(wait=False, STUDIO_TEST_STEP_SECONDS="0.1"), workers.start(
        wait=False, STUDIO_TEST_STEP_SECONDS="0.1"
    )
    wait_until(lambda: len(workers.records.workers()) == 2, 60, "two workers")
    out = tmp_path / "run"
    args = ["cmigbench", "--data", str(story(tmp_path / "story.json")), "--out", str(out), "--preset", "tiny",
            "--steps", "2", "--canvas", "64", "--no-progress", "--workers", "celery"]

    result = CliRunner().invoke(bench_app, args)
    assert result.exit_code == 0, result.output
    assert f"{DIALOGUES} dialogues: {2 * DIALOGUES} turns drawn" in result.output
    assert all((out / f"dialogue {n}" / "turn2.png").exists() for n in range(1, DIALOGUES + 1))
    # the heartbeats count each worker's jobs: a worker holds one job at a time, so the two dialogues drawn at
    # once kept both busy
    wait_until(lambda: sum(b.jobs_done for b in workers.records.workers()) == 2 * DIALOGUES, 10, "the heartbeats")
    assert all(beat.jobs_done for beat in workers.records.workers())

    again = CliRunner().invoke(bench_app, args)
    assert again.exit_code == 0 and f"0 turns drawn, {2 * DIALOGUES} already done" in again.output
    assert first.poll() is None and second.poll() is None
