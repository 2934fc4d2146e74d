"""GraphEngine.forget deletes the checkpoints of one session's thread (SQLite and PostgreSQL savers)."""

from __future__ import annotations

import uuid
from pathlib import Path

from agents import GraphEngine, build_engine
from studio.settings import Settings
from studio.storage.images import MemoryImageStore
from tests.agents.fakes import FakeDrawer, Session
from tests.agents.test_postgres import URL
from tests.postgres import require_postgres


def _forget_one_of_two(engine: GraphEngine) -> None:
    doomed, kept = (Session(engine, session_id=f"forget-{uuid.uuid4().hex}") for _ in range(2))
    for session in (doomed, kept):
        session.turn("A knight and a dragon face each other.")
    assert engine.state(doomed.session_id)["done"]
    engine.forget(doomed.session_id)
    assert engine.state(doomed.session_id) == {}
    assert list(engine.checkpointer.list({"configurable": {"thread_id": doomed.session_id}})) == []
    assert engine.state(kept.session_id)["done"]  # other threads are untouched


def test_forget_deletes_a_threads_sqlite_checkpoints(offline_engine: GraphEngine) -> None:
    _forget_one_of_two(offline_engine)


def test_forget_deletes_a_threads_postgres_checkpoints(tmp_path: Path) -> None:
    require_postgres(URL)
    engine = build_engine(Settings(data_dir=tmp_path, database_url=URL), FakeDrawer(), MemoryImageStore())
    assert type(engine.checkpointer).__name__ == "PostgresSaver"
    try:
        _forget_one_of_two(engine)
    finally:
        engine.close()
