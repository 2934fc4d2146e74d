"""Branching: a session records the session and turn it was branched from, and each finished turn keeps
the subject memory as it was after that turn (the memory a branch at that turn starts with).

`parent_id` is a plain column, not a foreign key: a branch outlives its parent, and then names a session
that no longer exists. Turns finished before this revision have no memory snapshot (NULL).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("parent_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("branch_turn", sa.Integer, nullable=True))
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("memory", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("memory")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("branch_turn")
        batch.drop_column("parent_id")
