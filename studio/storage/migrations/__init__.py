"""Alembic migrations of the studio schema (studio/storage/schema.py); run by `Database.migrate()`."""
