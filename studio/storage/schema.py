"""The SQL schema (SQLAlchemy Core): the same tables on SQLite (embedded) and PostgreSQL (scale-out).

A change here needs a migration in studio/storage/migrations/versions/ (see docs/operations.md); a test checks
that the migrated database equals this metadata."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("name", String(200), nullable=False, default=""),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("title", String(200), nullable=False, default=""),
    Column("height", Integer, nullable=False),
    Column("width", Integer, nullable=False),
    Column("settings", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("parent_id", String(32), nullable=True),
    Column("branch_turn", Integer, nullable=True),
)

turns = Table(
    "turns",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("request", JSON, nullable=False),
    Column("plan", JSON, nullable=True),
    Column("image_id", String(64), nullable=True),
    Column("debug_image_id", String(64), nullable=True),
    Column("crops", JSON, nullable=False, default=list),
    Column("timings", JSON, nullable=False, default=dict),
    Column("info", JSON, nullable=False, default=dict),
    Column("error", Text, nullable=True),
    Column("idempotency_key", String(200), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False, server_default=false()),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("memory", JSON, nullable=True),
    UniqueConstraint("session_id", "idx", name="uq_turn_index"),
    UniqueConstraint("session_id", "idempotency_key", name="uq_turn_idempotency"),
)
Index("ix_turns_status", turns.c.status)

subjects = Table(
    "subjects",
    metadata,
    Column("session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("subject_id", String(16), primary_key=True),
    Column("data", JSON, nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("session_id", String(32), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("type", String(16), nullable=False),
    Column("turn_id", String(32), nullable=False),
    Column("turn_index", Integer, nullable=False),
    Column("data", JSON, nullable=False),
)

stories = Table(
    "stories",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant", String(64), nullable=False, index=True),
    Column("title", String(200), nullable=False, default=""),
    Column("status", String(16), nullable=False),
    Column("request", JSON, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("current_round", Integer, nullable=False, default=0),
    Column("error", Text, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False, server_default=false()),
    Column("lease_owner", String(64), nullable=True),
    Column("lease_expires_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
)
Index("ix_stories_status", stories.c.status)

story_frames = Table(
    "story_frames",
    metadata,
    Column("story_id", String(32), ForeignKey("stories.id", ondelete="CASCADE"), primary_key=True),
    Column("round", Integer, primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("image_id", String(64), nullable=False, index=True),
    Column("seconds", Float, nullable=False, default=0.0),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
