from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cmigbench"


def _samples() -> Path:
    for candidate in (SAMPLES, Path("/work/shared/data/cmigbench")):
        if (candidate / "story_sample.json").exists():
            return candidate
    pytest.skip("CMIGBench sample files not found next to the repo (shared/data/cmigbench)")
    raise AssertionError


@pytest.fixture
def story_file() -> Path:
    return _samples() / "story_sample.json"


@pytest.fixture
def demo_file() -> Path:
    return _samples() / "autostudio_demo.json"
