"""Alembic migrations on SQLite and the real PostgreSQL: from empty, from a first-release database, and
the migrated schema equals schema.py's metadata."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from setuptools import find_packages
from sqlalchemy import MetaData, insert, inspect, text
from typer.testing import CliRunner

from entrypoints.cli import app
from studio.storage import schema
from studio.storage.database import FIRST_REVISION, MIGRATIONS, Database
from studio.turns import TurnStatus

ROOT = Path(__file__).resolve().parents[2]


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head() or ""


def _schema_diff(db: Database) -> list:
    with db.engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), schema.metadata)


def test_upgrade_from_empty_gives_the_schema_of_schema_py(database_url: str) -> None:
    db = Database(database_url)
    assert db.migrate() == _head()
    assert _schema_diff(db) == []
    assert db.migrate() == _head()  # a second run is a no-op
    db.engine.dispose()


def _first_release_database(url: str) -> None:
    """The tables the first release's `create_all()` made, without alembic_version: revision 0001 is that
    schema (checked with compare_metadata against commit d1dc21f's metadata when 0001 was written)."""
    db = Database(url)
    db.migrate(FIRST_REVISION)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        assert "alembic_version" not in inspect(conn).get_table_names()
    db.engine.dispose()


def test_a_first_release_database_is_stamped_upgraded_and_keeps_its_rows(database_url: str) -> None:
    _first_release_database(database_url)
    created = datetime(2026, 1, 2, tzinfo=UTC)
    engine = Database(database_url).engine
    first_release = MetaData()
    first_release.reflect(engine)
    sessions, turns, events = (first_release.tables[name] for name in ("sessions", "turns", "events"))
    with engine.begin() as conn:
        conn.execute(
            insert(sessions).values(
                id="s1", tenant="t", title="old", height=64, width=96, settings={"steps": 3}, created_at=created
            )
        )
        conn.execute(
            insert(turns).values(
                id="t1",
                session_id="s1",
                idx=1,
                status="queued",
                request={"message": "a girl"},
                crops=[],
                timings={},
                info={},
                created_at=created,
            )
        )
        conn.execute(insert(events).values(session_id="s1", seq=1, type="queued", turn_id="t1", turn_index=1, data={}))
    engine.dispose()

    db = Database(database_url)
    assert db.migrate() == _head()
    assert _schema_diff(db) == []
    session = db.get_session("s1")
    assert session is not None and session.title == "old" and session.settings.steps == 3
    (turn,) = db.list_turns("s1")
    assert turn.request.message == "a girl" and turn.status == TurnStatus.QUEUED
    assert not db.cancel_requested("t1")  # the new column got its default on the old row
    assert [e.type for e in db.events_after("s1", 0)] == ["queued"]
    db.engine.dispose()


def test_the_migrations_ship_inside_the_package() -> None:
    packages = find_packages(str(ROOT), include=["studio*"])
    assert {"studio.storage.migrations", "studio.storage.migrations.versions"} <= set(packages)
    assert MIGRATIONS.is_relative_to(ROOT / "studio")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"*.mako"' in pyproject  # the revision template travels in the wheel too


def test_studio_db_upgrade_migrates_the_configured_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert f"revision {_head()}" in result.output
    db = Database(f"sqlite:///{tmp_path / 'studio.db'}")
    assert _schema_diff(db) == []
    db.engine.dispose()


def test_rows_stored_before_the_request_rules_are_repaired_and_read_back(database_url: str) -> None:
    """The first release stored a huge fuse_scale (and, on SQLite, NaN and control characters); revision 0003
    brings such rows within today's rules, so the session, its turns and list_sessions read them again."""
    db = Database(database_url)
    db.migrate("0002")
    sqlite = database_url.startswith("sqlite")
    title = "old\x01title" if sqlite else "old title"  # PostgreSQL never stored NUL-like controls in JSON text
    settings = {"steps": 3, "fuse_scale": [1e300, 0.0], "img_scale": 99.0, "guidance_scale": 7.0}
    if sqlite:
        settings["guidance_scale"] = float("nan")
    created = datetime(2026, 1, 2, tzinfo=UTC)
    with db.engine.begin() as conn:
        conn.execute(
            insert(schema.sessions).values(
                id="s1", tenant="t", title=title, height=64, width=96, settings=settings, created_at=created
            )
        )
        conn.execute(
            insert(schema.turns).values(
                id="t1",
                session_id="s1",
                idx=1,
                status="failed",
                request={"message": "a girl\x07 waves", "settings": {"fuse_scale": [0.5, 1e9]}},
                crops=[],
                timings={},
                info={},
                created_at=created,
            )
        )
    assert db.migrate() == _head()
    session = db.get_session("s1")
    assert session is not None and session.title == "oldtitle" if sqlite else session.title == "old title"
    assert session.settings.fuse_scale == (5.0, 0.0) and session.settings.img_scale == 5.0
    assert session.settings.guidance_scale == (7.5 if sqlite else 7.0)
    (turn,) = db.list_turns("s1")
    assert turn.request.message == "a girl waves"
    assert turn.request.settings is not None and turn.request.settings.fuse_scale == (0.5, 5.0)
    assert [s.id for s in db.list_sessions("t")] == ["s1"]
    db.engine.dispose()
