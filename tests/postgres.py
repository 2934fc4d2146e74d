"""A throwaway database on the real local PostgreSQL (trust auth, user postgres).

Where PostgreSQL is unreachable the test is skipped, except under CI (`CI` set), where the scale-out path
must be tested for real: there it fails."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text

POSTGRES_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def unavailable(reason: str) -> None:
    """Skip the test for want of PostgreSQL, or fail it under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"CI needs PostgreSQL at 127.0.0.1:5432: {reason}")
    pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {reason}")


def require_postgres(url: str) -> None:
    """Return when the server behind the SQLAlchemy `url` answers; otherwise `unavailable`."""
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1), connect_timeout=3):
            return
    except Exception as exc:  # any failure means: no server to test against
        unavailable(str(exc))


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database, dropped (with its connections) afterwards."""
    name = f"studio_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{POSTGRES_SERVER}/test", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        unavailable(str(exc))
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
