"""Databases for the storage and service tests: embedded SQLite and a fresh database on the real local
PostgreSQL (trust auth), dropped afterwards; PostgreSQL tests skip with the reason when it is unreachable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from studio.storage.database import Database

POSTGRES_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database."""
    name = f"studio_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {exc}")
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'studio.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database of each kind."""
    database = Database(database_url)
    database.migrate()
    yield database
    database.engine.dispose()
