"""Rows written before the request rules (finite, bounded numbers; no control characters in text) are
brought within them, so every stored session and turn reads back through today's models.

The first release accepted, for example, `fuse_scale: [1e300, 0]` (stored; the turn drew an all-black
image) and control characters in titles and messages (stored verbatim on SQLite). A migration must not
depend on models that keep changing, so the bounds and the text rule are written down here as they were
when this revision was made: out-of-range numbers are clamped, non-finite ones take the default,
forbidden characters are removed.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import math
import re
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")

# DrawSettings at this revision: key -> (lowest, highest, default)
SETTINGS_BOUNDS: dict[str, tuple[float, float, Any]] = {
    "steps": (1, 200, 30),
    "guidance_scale": (0.0, 50.0, 7.5),
    "seed": (0, 2**63 - 1, None),
    "img_scale": (0.0, 5.0, 0.7),
    "global_weight": (0.0, 2.0, 0.3),
    "refine_step": (0, 200, 20),
    "subject_init_steps": (0, 200, 10),
    "subject_init_strength": (0.0, 1.0, 0.8),
    "prerender_steps": (1, 200, 15),
}
FUSE_BOUNDS = (0.0, 5.0)
FUSE_DEFAULT = (1.2, 0.0)


def clean_text(value: Any) -> Any:
    """Every string inside `value` (nested dicts and lists too) without the forbidden characters."""
    if isinstance(value, str):
        return FORBIDDEN.sub("", value)
    if isinstance(value, list):
        return [clean_text(item) for item in value]
    if isinstance(value, dict):
        return {clean_text(key): clean_text(item) for key, item in value.items()}
    return value


def _bounded(value: Any, low: float, high: float, default: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return default
    return min(max(value, low), high)


def bound_settings(settings: Any) -> Any:
    """A stored DrawSettings dict with its numbers within this revision's bounds."""
    if not isinstance(settings, dict):
        return settings
    fixed = dict(settings)
    for key, (low, high, default) in SETTINGS_BOUNDS.items():
        if key in fixed and fixed[key] is not None:
            fixed[key] = _bounded(fixed[key], low, high, default)
    fuse = fixed.get("fuse_scale")
    if isinstance(fuse, list | tuple) and len(fuse) == 2:
        fixed["fuse_scale"] = [_bounded(v, *FUSE_BOUNDS, FUSE_DEFAULT[i]) for i, v in enumerate(fuse)]
    return fixed


def _fix_request(request: Any) -> Any:
    request = clean_text(request)
    if isinstance(request, dict) and isinstance(request.get("settings"), dict):
        request = {**request, "settings": bound_settings(request["settings"])}
    return request


def _rewrite(table: sa.Table, key_columns: list[str], fixes: dict[str, Any]) -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.select(*(table.c[name] for name in key_columns + list(fixes)))).mappings().all()
    for row in rows:
        changed = {name: fix(row[name]) for name, fix in fixes.items()}
        changed = {name: value for name, value in changed.items() if value != row[name]}
        if changed:
            where = [table.c[name] == row[name] for name in key_columns]
            conn.execute(sa.update(table).where(*where).values(**changed))


def upgrade() -> None:
    metadata = sa.MetaData()
    sessions = sa.Table(
        "sessions", metadata, sa.Column("id", sa.String), sa.Column("title", sa.String), sa.Column("settings", sa.JSON)
    )
    turns = sa.Table(
        "turns",
        metadata,
        sa.Column("id", sa.String),
        sa.Column("request", sa.JSON),
        sa.Column("plan", sa.JSON),
        sa.Column("error", sa.Text),
    )
    subjects = sa.Table(
        "subjects",
        metadata,
        sa.Column("session_id", sa.String),
        sa.Column("subject_id", sa.String),
        sa.Column("data", sa.JSON),
    )
    _rewrite(sessions, ["id"], {"title": clean_text, "settings": lambda s: bound_settings(clean_text(s))})
    _rewrite(turns, ["id"], {"request": _fix_request, "plan": clean_text, "error": clean_text})
    _rewrite(subjects, ["session_id", "subject_id"], {"data": clean_text})


def downgrade() -> None:
    """Nothing to undo: the repaired values are valid at every earlier revision too."""
