"""Databases for the storage and service tests: embedded SQLite and a fresh database on the real local
PostgreSQL (`postgres_url`, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.storage.database import Database


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
