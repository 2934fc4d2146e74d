"""Alembic environment. `Database.migrate()` hands over an open connection (config.attributes["connection"]);
the `alembic` command line (see alembic.ini at the repository root) connects to the configured database."""

from __future__ import annotations

from alembic import context

from studio.storage.database import Database
from studio.storage.schema import metadata


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise RuntimeError("offline (--sql) migrations are not supported; run `studio db upgrade`")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        from studio.settings import Settings

        url = Settings().resolved_database_url
    engine = Database(url).engine  # creates the SQLite folder and sets the connection options
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


main()
