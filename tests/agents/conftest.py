from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agents import GraphEngine, build_engine
from studio.settings import LLMSettings, Settings
from studio.storage.images import FileImageStore
from tests.agents.fake_openai import FakeOpenAI, ServerThread
from tests.agents.fakes import FakeDrawer


@pytest.fixture
def fake_llm() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with ServerThread(fake) as server:
        yield fake, server.base_url


def llm_settings(data_dir: Path, base_url: str, **llm: object) -> Settings:
    options: dict[str, object] = {"base_url": base_url, "timeout_s": 5.0, "max_retries": 2, **llm}
    return Settings(data_dir=data_dir, llm=LLMSettings(**options))  # type: ignore[arg-type]


@pytest.fixture
def offline_engine(tmp_path: Path) -> Iterator[GraphEngine]:
    engine = build_engine(Settings(data_dir=tmp_path), FakeDrawer(), FileImageStore(tmp_path / "images"))
    yield engine
    engine.close()
