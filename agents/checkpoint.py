"""LangGraph checkpointers chosen from the settings: SQLite in the data folder by default, Postgres when
the database URL is a postgresql one."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver

from studio.settings import Settings
from studio.storage.database import libpq_url

CHECKPOINT_FILE = "checkpoints.sqlite"
SETUP_POLL_SECONDS = 0.05
SETUP_LOCK = 7_430_051_002  # any constant: the PostgreSQL advisory lock held while the checkpoint tables are set up


def is_postgres(url: str | None) -> bool:
    return bool(url) and re.match(r"^postgres(ql)?(\+\w+)?://", url or "") is not None


def sqlite_checkpointer(path: Path) -> tuple[SqliteSaver, Callable[[], None]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.setup()  # switches the file to WAL
    # In WAL mode NORMAL skips the fsync per commit but never corrupts the file and loses nothing when the
    # process dies (only an OS crash or power loss can drop the last commits): a killed turn still resumes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return saver, conn.close


def postgres_checkpointer(url: str, max_size: int = 8) -> tuple[BaseCheckpointSaver, Callable[[], None]]:
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        libpq_url(url),
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        open=True,
    )
    saver = PostgresSaver(pool)  # type: ignore[arg-type]
    try:
        # API processes starting together would each insert the same checkpoint_migrations rows: one at a time.
        # The lock is polled, not waited on: a session blocked in pg_advisory_lock would hold a snapshot, which
        # the holder's CREATE INDEX CONCURRENTLY waits for (a deadlock).
        with pool.connection() as conn:
            while not conn.execute("SELECT pg_try_advisory_lock(%s) AS held", (SETUP_LOCK,)).fetchone()["held"]:
                time.sleep(SETUP_POLL_SECONDS)
            try:
                saver.setup()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (SETUP_LOCK,))
    except Exception:
        pool.close()
        raise
    return saver, pool.close


def open_checkpointer(settings: Settings) -> tuple[BaseCheckpointSaver, Callable[[], None]]:
    """The checkpointer for these settings and the function that closes it."""
    if is_postgres(settings.database_url):
        return postgres_checkpointer(settings.resolved_database_url)
    return sqlite_checkpointer(Path(settings.data_dir) / CHECKPOINT_FILE)
