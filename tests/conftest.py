"""Shared by every test: hermetic defaults and a fresh PostgreSQL database.

- The per-user data folder (studio.settings.default_data_dir) lies in a temporary folder, so a test that builds
  Settings() without a data_dir never writes to the real home.
- Tests import the drawer and vision modules directly, not through the loaders that install the filter of
  known harmless library warnings, so the filter is installed here too.
- `postgres_url`: a new, empty database on the real local PostgreSQL (tests/postgres.py: skipped when
  unreachable, failed under CI)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from studio.library_logs import quiet_known_library_warnings
from tests.postgres import fresh_postgres_database

quiet_known_library_warnings()


@pytest.fixture(autouse=True)
def _private_user_data_folder(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path_factory.mktemp("xdg-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(folder))
    return folder


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database."""
    with fresh_postgres_database() as url:
        yield url
