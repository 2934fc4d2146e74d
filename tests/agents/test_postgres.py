"""The Postgres checkpointer path against the local PostgreSQL (skipped when unreachable, failed under CI:
tests/postgres.py)."""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agents import build_engine
from agents.checkpoint import is_postgres, libpq_url, postgres_checkpointer
from studio.settings import Settings
from studio.storage.images import MemoryImageStore
from tests.agents.fakes import FakeDrawer, Session
from tests.postgres import require_postgres

URL = os.environ.get("STUDIO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")



def test_url_forms() -> None:
    assert is_postgres("postgresql+psycopg://u@h/db") and is_postgres("postgres://u@h/db")
    assert not is_postgres("sqlite:///x.db") and not is_postgres(None)
    assert libpq_url("postgresql+psycopg://u:p@h:5432/db") == "postgresql://u:p@h:5432/db"


def test_postgres_checkpointer_runs_and_resumes_turns(tmp_path: Path) -> None:
    require_postgres(URL)
    settings = Settings(data_dir=tmp_path, database_url=URL)
    images = MemoryImageStore()
    engine = build_engine(settings, FakeDrawer(), images)
    assert type(engine.checkpointer).__name__ == "PostgresSaver"
    session = Session(engine, session_id=f"pg-{uuid.uuid4().hex}")
    session.turn("A knight and a dragon face each other, the knight on the left.")
    second = session.turn("He raises a sword.")
    assert second.plan.subject_ids == ["1", "1-1"]
    engine.close()
    assert not (tmp_path / "checkpoints.sqlite").exists()

    reopened = build_engine(settings, FakeDrawer(), images)
    state = reopened.state(session.session_id)
    assert state["done"] and [s["id"] for s in state["subjects"]] == ["1", "1-1", "2"]
    ctx = session.context("unused", turn_id=state["turn_id"])
    again = reopened.run_turn(ctx, session.emit)
    assert again.plan == second.plan
    reopened.close()


def test_checkpoint_tables_set_up_by_processes_starting_together(postgres_url: str) -> None:
    """API processes starting at once on a new database each set up the checkpoint tables; none may fail on
    another's migration rows (it did: UniqueViolation on checkpoint_migrations_pkey)."""
    starters = 6
    barrier = threading.Barrier(starters)

    def start() -> None:
        barrier.wait()
        _, close = postgres_checkpointer(postgres_url, max_size=2)
        close()

    with ThreadPoolExecutor(max_workers=starters) as pool:
        for future in [pool.submit(start) for _ in range(starters)]:
            future.result()
