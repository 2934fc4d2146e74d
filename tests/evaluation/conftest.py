from __future__ import annotations

from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = (
    _REPO.parent / "shared" / "data" / "cmigbench",  # shared/ beside the checkout
    _REPO / "shared" / "data" / "cmigbench",  # shared/ inside it
)


def _samples() -> Path:
    for candidate in _CANDIDATES:
        if (candidate / "story_sample.json").exists():
            return candidate
    pytest.skip("CMIGBench sample files (shared/data/cmigbench) not found")
    raise AssertionError


@pytest.fixture
def story_file() -> Path:
    return _samples() / "story_sample.json"


@pytest.fixture
def demo_file() -> Path:
    return _samples() / "autostudio_demo.json"
