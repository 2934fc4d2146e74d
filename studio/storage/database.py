"""Typed access to the SQL tables. Every method is one short transaction; callers never see SQL."""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url

from studio.draw import DrawSettings
from studio.events import EventNotice
from studio.plan import TurnPlan
from studio.reference_memory import keep_user_fields
from studio.rejections import BranchConflict, IdempotencyKeyReused, QueueFull, SessionGone
from studio.storage import schema
from studio.subjects import ReferenceSource, Subject, id_key
from studio.turns import CropView, Session, Turn, TurnEvent, TurnRequest, TurnStatus

KEY_PREFIX = "sk-studio-"
MIGRATIONS = Path(__file__).parent / "migrations"
FIRST_REVISION = "0001"
MIGRATION_LOCK = 7_430_051_001  # any constant: the PostgreSQL advisory lock taken while migrating
ANCHOR_CACHE = "anchor_cache"
"""The `images.kind` of a subject's ConsiStory anchor cache blob (in the image store, never served as an image)."""
UNFINISHED = [TurnStatus.QUEUED.value, TurnStatus.PLANNING.value, TurnStatus.DRAWING.value]


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> datetime:
    return datetime.now(UTC)


def libpq_url(url: str) -> str:
    """'postgresql+psycopg://u@h/db' (SQLAlchemy form) → 'postgresql://u@h/db' (libpq form, for psycopg)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": 30} if self.is_sqlite else {}
        self.engine: Engine = create_engine(
            url, connect_args=connect_args, pool_pre_ping=True, pool_size=20, max_overflow=20
        )
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)

    def migrate(self, revision: str = "head") -> str:
        """Bring the schema to the newest revision (`alembic upgrade head`), or to `revision`; returns the
        revision the database is at.

        A database made by the first release's `create_all()` (tables, no alembic_version) is recognised
        and stamped at revision 0001 first. Everything runs in one transaction that holds the database's
        write lock (SQLite) or an advisory lock (PostgreSQL), so processes starting together migrate once."""
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._locked_tx(None) as conn:
            if not self.is_sqlite:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = conn
            tables = set(inspect(conn).get_table_names())
            if "alembic_version" not in tables and "sessions" in tables:
                command.stamp(config, FIRST_REVISION)
            command.upgrade(config, revision)
            return MigrationContext.configure(conn).get_current_revision() or ""

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _locked_tx(self, session_id: str | None) -> Iterator[Connection]:
        """A transaction that serialises with every other writer of the session: SQLite takes the database's
        write lock at BEGIN (BEGIN IMMEDIATE); PostgreSQL locks the session's row (SELECT … FOR UPDATE)."""
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"
            with conn.begin():
                if session_id is not None and not self.is_sqlite:
                    conn.execute(
                        select(schema.sessions.c.id).where(schema.sessions.c.id == session_id).with_for_update()
                    )
                yield conn

    # --- API keys --------------------------------------------------------------------------------------

    def create_key(self, tenant: str, name: str = "") -> str:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.tx() as conn:
            conn.execute(
                insert(schema.api_keys).values(
                    id=new_id(), tenant=tenant, name=name, key_hash=hash_key(key), created_at=now(), revoked=False
                )
            )
        return key

    def tenant_for_key(self, key: str) -> str | None:
        with self.tx() as conn:
            row = conn.execute(
                select(schema.api_keys.c.tenant).where(
                    schema.api_keys.c.key_hash == hash_key(key), schema.api_keys.c.revoked.is_(False)
                )
            ).first()
        return row.tenant if row else None

    def list_keys(self) -> list[dict[str, Any]]:
        with self.tx() as conn:
            rows = conn.execute(select(schema.api_keys).order_by(schema.api_keys.c.created_at)).mappings().all()
        return [{k: v for k, v in row.items() if k != "key_hash"} for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        with self.tx() as conn:
            result = conn.execute(update(schema.api_keys).where(schema.api_keys.c.id == key_id).values(revoked=True))
        return result.rowcount > 0

    # --- sessions -------------------------------------------------------------------------------------

    def create_session(self, tenant: str, title: str, height: int, width: int, settings: DrawSettings) -> Session:
        session = Session(
            id=new_id(), tenant=tenant, title=title, height=height, width=width, settings=settings, created_at=now()
        )
        with self.tx() as conn:
            conn.execute(
                insert(schema.sessions).values(
                    id=session.id,
                    tenant=tenant,
                    title=title,
                    height=height,
                    width=width,
                    settings=settings.model_dump(mode="json"),
                    created_at=session.created_at,
                )
            )
        return session

    def branch_session(self, parent_id: str, turn_index: int, title: str | None = None) -> Session:
        """A new session of the parent's tenant, canvas and settings that shares the parent's history up to
        `turn_index` (0: none of it): copies of the turn rows 1..turn_index (new ids, the same image ids), the
        subject memory as it was after that turn, and image rows of the new session for every image those
        reference (the files are shared, so deleting either session keeps what the other uses).

        SessionGone when the parent does not exist; LookupError when it has no such turn; BranchConflict when
        the turn is not done, or was finished before memory snapshots were stored and is not the last done
        turn (the session's memory is then known only as it is now)."""
        with self._locked_tx(parent_id) as conn:
            parent = conn.execute(select(schema.sessions).where(schema.sessions.c.id == parent_id)).mappings().first()
            if parent is None:
                raise SessionGone(f"session {parent_id} not found")
            rows = (
                conn.execute(
                    select(schema.turns)
                    .where(schema.turns.c.session_id == parent_id, schema.turns.c.idx <= turn_index)
                    .order_by(schema.turns.c.idx)
                )
                .mappings()
                .all()
            )
            memory = [] if turn_index == 0 else _memory_after(conn, parent_id, turn_index, rows)
            child = Session(
                id=new_id(),
                tenant=parent["tenant"],
                title=title if title is not None else _branch_title(parent["title"], turn_index),
                height=parent["height"],
                width=parent["width"],
                settings=DrawSettings.model_validate(parent["settings"]),
                created_at=now(),
                turn_count=len(rows),
                parent_id=parent_id,
                branch_turn=turn_index,
            )
            conn.execute(
                insert(schema.sessions).values(
                    {**parent, "id": child.id, "title": child.title, "created_at": child.created_at}
                    | {"parent_id": parent_id, "branch_turn": turn_index}
                )
            )
            shared: dict[str, str] = {}
            for row in rows:
                turn = _turn(row)
                conn.execute(
                    insert(schema.turns).values(
                        {**row, "id": new_id(), "session_id": child.id, "idempotency_key": None}
                    )
                )
                for image_id, kind in _images_of(turn).items():
                    shared.setdefault(image_id, kind)
            for subject in memory:
                if subject.reference_image_id:
                    shared.setdefault(subject.reference_image_id, "reference")
                if subject.anchor_cache_id:
                    shared.setdefault(subject.anchor_cache_id, ANCHOR_CACHE)
                for more_id in subject.more_reference_image_ids:
                    shared.setdefault(more_id, "reference")
            if child.settings.style_reference.image_id is not None:
                shared.setdefault(child.settings.style_reference.image_id, "style")
            for image_id, kind in shared.items():
                _insert_image(conn, image_id, child.id, child.tenant, kind)
            if memory:
                conn.execute(
                    insert(schema.subjects),
                    [{"session_id": child.id, "subject_id": s.id, "data": s.model_dump(mode="json")} for s in memory],
                )
        return child

    def get_session(self, session_id: str, tenant: str | None = None) -> Session | None:
        turn_count = (
            select(func.count())
            .select_from(schema.turns)
            .where(schema.turns.c.session_id == schema.sessions.c.id)
            .scalar_subquery()
        )
        query = select(schema.sessions, turn_count.label("n")).where(schema.sessions.c.id == session_id)
        if tenant is not None:
            query = query.where(schema.sessions.c.tenant == tenant)
        with self.tx() as conn:
            row = conn.execute(query).mappings().first()
        return _session(row, row["n"]) if row else None

    def list_sessions(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Session]:
        counts = (
            select(schema.turns.c.session_id, func.count().label("n")).group_by(schema.turns.c.session_id).subquery()
        )
        query = (
            select(schema.sessions, func.coalesce(counts.c.n, 0).label("n"))
            .outerjoin(counts, counts.c.session_id == schema.sessions.c.id)
            .where(schema.sessions.c.tenant == tenant)
            .order_by(schema.sessions.c.created_at.desc())
            .limit(limit)
            .offset(offset)
        )
        with self.tx() as conn:
            rows = conn.execute(query).mappings().all()
        return [_session(row, row["n"]) for row in rows]

    def delete_session(self, session_id: str) -> list[str]:
        """Delete the session's rows (turns, subjects, images, events) and return the ids of its images that
        no other session references any more: their files may go."""
        with self._locked_tx(session_id) as conn:
            image_ids = set(
                conn.execute(select(schema.images.c.id).where(schema.images.c.session_id == session_id)).scalars()
            )
            for table in (schema.events, schema.images, schema.subjects, schema.turns):
                conn.execute(delete(table).where(table.c.session_id == session_id))
            conn.execute(delete(schema.sessions).where(schema.sessions.c.id == session_id))
            return _unreferenced(conn, image_ids)

    def unreferenced_images(self, image_ids: set[str]) -> list[str]:
        """The ids among these that no session's image row references."""
        with self.tx() as conn:
            return _unreferenced(conn, image_ids)

    # --- turns ----------------------------------------------------------------------------------------

    def create_turn(
        self, session_id: str, request: TurnRequest, idempotency_key: str | None, max_unfinished: int | None = None
    ) -> tuple[Turn, bool]:
        """Insert a queued turn with the next index. Returns (turn, created); a repeated idempotency key with
        the same request returns the existing turn with created=False.

        One transaction serialised with every other writer of the session (`_locked_tx`), so the checks hold
        under concurrency: IdempotencyKeyReused when the key was used for a different request, QueueFull when
        the session already has `max_unfinished` unfinished turns, SessionGone when it was deleted."""
        stored_request = request.model_dump(mode="json", exclude_none=True)
        with self._locked_tx(session_id) as conn:
            if conn.execute(select(schema.sessions.c.id).where(schema.sessions.c.id == session_id)).first() is None:
                raise SessionGone(f"session {session_id} not found")
            if idempotency_key is not None:
                existing = (
                    conn.execute(
                        select(schema.turns).where(
                            schema.turns.c.session_id == session_id, schema.turns.c.idempotency_key == idempotency_key
                        )
                    )
                    .mappings()
                    .first()
                )
                if existing is not None:
                    if _canonical(TurnRequest.model_validate(existing["request"])) != _canonical(request):
                        raise IdempotencyKeyReused(
                            f"Idempotency-Key {idempotency_key!r} was already used in this session for turn "
                            f"{existing['idx']} with a different request body; use a new key for a new request"
                        )
                    return _turn(existing), False
            if max_unfinished is not None:
                waiting = conn.execute(
                    select(func.count())
                    .select_from(schema.turns)
                    .where(schema.turns.c.session_id == session_id, schema.turns.c.status.in_(UNFINISHED))
                ).scalar_one()
                if waiting >= max_unfinished:
                    raise QueueFull(f"{waiting} turns are already waiting in this session; retry later")
            index = (
                conn.execute(
                    select(func.coalesce(func.max(schema.turns.c.idx), 0)).where(
                        schema.turns.c.session_id == session_id
                    )
                ).scalar_one()
                + 1
            )
            values = {
                "id": new_id(),
                "session_id": session_id,
                "idx": index,
                "status": TurnStatus.QUEUED.value,
                "request": stored_request,
                "crops": [],
                "timings": {},
                "info": {},
                "idempotency_key": idempotency_key,
                "created_at": now(),
                "cancel_requested": False,
            }
            conn.execute(insert(schema.turns).values(**values))
        return _turn(
            {**values, "plan": None, "image_id": None, "debug_image_id": None, "error": None, "finished_at": None}
        ), True

    def get_turn(self, session_id: str, index: int) -> Turn | None:
        query = select(schema.turns).where(schema.turns.c.session_id == session_id, schema.turns.c.idx == index)
        with self.tx() as conn:
            row = conn.execute(query).mappings().first()
        return _turn(row) if row else None

    def list_turns(self, session_id: str) -> list[Turn]:
        query = select(schema.turns).where(schema.turns.c.session_id == session_id).order_by(schema.turns.c.idx)
        with self.tx() as conn:
            rows = conn.execute(query).mappings().all()
        return [_turn(row) for row in rows]

    def set_turn_status(self, turn_id: str, status: TurnStatus, owner: str | None = None, **fields: Any) -> bool:
        """Returns False when the turn no longer exists (its session was deleted), or when `owner` is given and
        no longer holds the turn's lease (another process took the turn over). A finished turn's lease ends."""
        values: dict[str, Any] = {"status": status.value, **fields}
        if status.finished:
            values.update(finished_at=now(), lease_owner=None, lease_expires_at=None)
        query = update(schema.turns).where(schema.turns.c.id == turn_id)
        if owner is not None:
            query = query.where(schema.turns.c.lease_owner == owner)
        with self.tx() as conn:
            result = conn.execute(query.values(**values))
        return result.rowcount > 0

    # --- leases: one process drives a turn at a time ---------------------------------------------------

    def claim_next_turn(self, session_id: str, owner: str, lease_seconds: float) -> Turn | None:
        """Lease the session's next unfinished turn to `owner` for `lease_seconds` and return it. None when the
        session has no unfinished turn, when another owner holds a live lease on one of its unfinished turns
        (so a session's turns run in order, one process at a time), or when another process is claiming it at
        this moment: PostgreSQL locks the session's row with SKIP LOCKED (SQLite's BEGIN IMMEDIATE takes the
        database's write lock), and the lease is taken by an UPDATE guarded on the lease being free, ours or
        expired. A turn whose lease expired (its process died) is claimed like a free one."""
        moment = now()
        with self.engine.connect() as conn:
            if self.is_sqlite:
                conn.info["sqlite_begin"] = "BEGIN IMMEDIATE"
            with conn.begin():
                locked = conn.execute(
                    select(schema.sessions.c.id)
                    .where(schema.sessions.c.id == session_id)
                    .with_for_update(skip_locked=True)
                ).first()
                if locked is None:
                    return None
                rows = (
                    conn.execute(
                        select(schema.turns)
                        .where(schema.turns.c.session_id == session_id, schema.turns.c.status.in_(UNFINISHED))
                        .order_by(schema.turns.c.idx)
                    )
                    .mappings()
                    .all()
                )
                if not rows or any(_held_by_other(row, owner, moment) for row in rows):
                    return None
                expires = moment + timedelta(seconds=lease_seconds)
                claimed = conn.execute(
                    update(schema.turns)
                    .where(schema.turns.c.id == rows[0]["id"], lease_free(schema.turns, owner, moment))
                    .values(lease_owner=owner, lease_expires_at=expires)
                )
                if claimed.rowcount != 1:
                    return None
                return _turn(rows[0])

    def renew_leases(self, owner: str, turn_ids: list[str], lease_seconds: float) -> set[str]:
        """Extend `owner`'s leases on these turns; returns the ids it still holds (a lease that expired and was
        taken by another process is not renewed)."""
        if not turn_ids:
            return set()
        expires = now() + timedelta(seconds=lease_seconds)
        mine = (schema.turns.c.id.in_(turn_ids), schema.turns.c.lease_owner == owner)
        with self.tx() as conn:
            conn.execute(update(schema.turns).where(*mine).values(lease_expires_at=expires))
            return set(conn.execute(select(schema.turns.c.id).where(*mine)).scalars())

    def release_lease(self, turn_id: str, owner: str) -> None:
        """Give up `owner`'s lease on an unfinished turn (graceful shutdown): another process may take it now."""
        with self.tx() as conn:
            conn.execute(
                update(schema.turns)
                .where(schema.turns.c.id == turn_id, schema.turns.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def claimable_sessions(self, among: list[str] | None = None) -> list[str]:
        """Sessions (of `among`, when given) with an unfinished turn and no live lease on any of their
        unfinished turns."""
        moment = now()
        held = select(schema.turns.c.session_id).where(
            schema.turns.c.status.in_(UNFINISHED),
            schema.turns.c.lease_owner.is_not(None),
            schema.turns.c.lease_expires_at >= moment,
        )
        query = (
            select(schema.turns.c.session_id)
            .where(schema.turns.c.status.in_(UNFINISHED), schema.turns.c.session_id.not_in(held))
            .distinct()
        )
        if among is not None:
            query = query.where(schema.turns.c.session_id.in_(among))
        with self.tx() as conn:
            return list(conn.execute(query).scalars())

    def request_cancel(self, turn_id: str) -> bool:
        """Store a cancel on an unfinished turn; whichever process runs or resumes it stops it. Returns False
        when the turn has already finished (or does not exist)."""
        with self.tx() as conn:
            result = conn.execute(
                update(schema.turns)
                .where(schema.turns.c.id == turn_id, schema.turns.c.status.in_(UNFINISHED))
                .values(cancel_requested=True)
            )
        return result.rowcount > 0

    def cancel_requested(self, turn_id: str) -> bool:
        """True when a cancel was stored for the turn, or the turn is gone (its session was deleted)."""
        query = select(schema.turns.c.cancel_requested).where(schema.turns.c.id == turn_id)
        with self.tx() as conn:
            flag = conn.execute(query).scalar_one_or_none()
        return flag is None or bool(flag)

    def finish_turn(
        self,
        turn: Turn,
        tenant: str,
        plan: TurnPlan,
        image_id: str,
        debug_image_id: str | None,
        crops: list[CropView],
        timings: dict[str, float],
        info: dict[str, Any],
        memory: list[Subject],
        image_ids: dict[str, str],
        owner: str | None = None,
    ) -> bool:
        """One transaction: the turn's record, the subject memory and the image rows. The image files were
        written before this is called, so every row points to a file that exists. Returns False (and writes
        nothing) when the turn's session was deleted meanwhile, or when `owner` is given and no longer holds
        the turn's lease (another process took it over and records it): a turn is recorded done once."""
        with self._locked_tx(turn.session_id) as conn:
            mine = select(schema.turns.c.id).where(schema.turns.c.id == turn.id)
            if owner is not None:
                mine = mine.where(schema.turns.c.lease_owner == owner)
            if conn.execute(mine).first() is None:
                return False
            for stored_id, kind in image_ids.items():
                _insert_image(conn, stored_id, turn.session_id, tenant, kind)
            memory = _keep_concurrent_uploads(conn, turn.session_id, memory)
            stored_memory = [s.model_dump(mode="json") for s in memory]
            conn.execute(delete(schema.subjects).where(schema.subjects.c.session_id == turn.session_id))
            if memory:
                conn.execute(
                    insert(schema.subjects),
                    [{"session_id": turn.session_id, "subject_id": s["id"], "data": s} for s in stored_memory],
                )
            conn.execute(
                update(schema.turns)
                .where(schema.turns.c.id == turn.id)
                .values(
                    status=TurnStatus.DONE.value,
                    plan=plan.model_dump(mode="json"),
                    image_id=image_id,
                    debug_image_id=debug_image_id,
                    crops=[c.model_dump(mode="json") for c in crops],
                    timings=timings,
                    info=info,
                    error=None,
                    finished_at=now(),
                    lease_owner=None,
                    lease_expires_at=None,
                    memory=stored_memory,
                )
            )
        return True

    # --- subjects and images --------------------------------------------------------------------------

    def list_subjects(self, session_id: str) -> list[Subject]:
        query = select(schema.subjects.c.data).where(schema.subjects.c.session_id == session_id)
        with self.tx() as conn:
            rows = conn.execute(query).all()
        found = [Subject.model_validate(row.data) for row in rows]
        return sorted(found, key=lambda s: id_key(s.id))

    def put_subject(self, session_id: str, tenant: str, subject: Subject, image_id: str | None) -> bool:
        """Store a subject (and its reference image's row). Returns False when the session was deleted."""
        with self._locked_tx(session_id) as conn:
            if conn.execute(select(schema.sessions.c.id).where(schema.sessions.c.id == session_id)).first() is None:
                return False
            if image_id is not None:
                _insert_image(conn, image_id, session_id, tenant, "upload")
            conn.execute(
                delete(schema.subjects).where(
                    schema.subjects.c.session_id == session_id, schema.subjects.c.subject_id == subject.id
                )
            )
            conn.execute(
                insert(schema.subjects).values(
                    session_id=session_id, subject_id=subject.id, data=subject.model_dump(mode="json")
                )
            )
        return True

    def prune_anchor_caches(self, session_id: str) -> list[str]:
        """Drop the session's anchor-cache rows that no subject of it holds any more (replaced by a better one,
        or dropped with a changed reference) and return the ids of those no session references: the caller
        deletes their files. A subject keeps one cache, so a session stores one per subject."""
        images, subjects = schema.images, schema.subjects
        with self._locked_tx(session_id) as conn:
            held = {
                Subject.model_validate(row.data).anchor_cache_id
                for row in conn.execute(select(subjects.c.data).where(subjects.c.session_id == session_id))
            }
            rows = set(
                conn.execute(
                    select(images.c.id).where(images.c.session_id == session_id, images.c.kind == ANCHOR_CACHE)
                ).scalars()
            )
            stale = rows - held
            if not stale:
                return []
            conn.execute(
                delete(images).where(
                    images.c.session_id == session_id, images.c.kind == ANCHOR_CACHE, images.c.id.in_(stale)
                )
            )
            return _unreferenced(conn, stale)

    def set_session_settings(self, session_id: str, tenant: str, settings: DrawSettings, image_id: str | None) -> bool:
        """Replace a session's settings (and add the row of an image they name). False when it was deleted."""
        with self._locked_tx(session_id) as conn:
            if conn.execute(select(schema.sessions.c.id).where(schema.sessions.c.id == session_id)).first() is None:
                return False
            if image_id is not None:
                _insert_image(conn, image_id, session_id, tenant, "style")
            conn.execute(
                update(schema.sessions)
                .where(schema.sessions.c.id == session_id)
                .values(settings=settings.model_dump(mode="json"))
            )
        return True

    def image_visible_to(self, image_id: str, tenant: str) -> bool:
        """True when one of the tenant's sessions or stories holds the image (an anchor cache is no image)."""
        query = select(schema.images.c.id).where(
            schema.images.c.id == image_id, schema.images.c.tenant == tenant, schema.images.c.kind != ANCHOR_CACHE
        )
        frames, stories = schema.story_frames, schema.stories
        in_story = (
            select(frames.c.image_id)
            .join(stories, stories.c.id == frames.c.story_id)
            .where(frames.c.image_id == image_id, stories.c.tenant == tenant)
        )
        with self.tx() as conn:
            return (
                conn.execute(query.limit(1)).first() is not None or conn.execute(in_story.limit(1)).first() is not None
            )

    # --- events ---------------------------------------------------------------------------------------

    def append_event(self, session_id: str, event_: TurnEvent, origin: str = "") -> TurnEvent | None:
        """Store the event with the session's next sequence number; None when the session was deleted.

        The number comes from the database, in a transaction that holds the session's row lock (PostgreSQL)
        or the write lock (SQLite), so processes sharing the database number one sequence without gaps or
        duplicates. On PostgreSQL the same transaction sends a NOTIFY (delivered on commit, with the row)
        that wakes the event streams of the other processes; `origin` names the sending process."""
        with self._locked_tx(session_id) as conn:
            if conn.execute(select(schema.sessions.c.id).where(schema.sessions.c.id == session_id)).first() is None:
                return None
            seq = (
                conn.execute(
                    select(func.coalesce(func.max(schema.events.c.seq), 0)).where(
                        schema.events.c.session_id == session_id
                    )
                ).scalar_one()
                + 1
            )
            stored = event_.model_copy(update={"seq": seq, "session_id": session_id})
            conn.execute(
                insert(schema.events).values(
                    session_id=session_id,
                    seq=seq,
                    type=stored.type,
                    turn_id=stored.turn_id,
                    turn_index=stored.turn_index,
                    data=stored.data,
                )
            )
            if not self.is_sqlite:
                notice = EventNotice(session_id=session_id, seq=seq, type=stored.type, origin=origin)
                conn.execute(select(func.pg_notify(notice.channel, notice.model_dump_json())))
        return stored

    def events_after(self, session_id: str, after: int) -> list[TurnEvent]:
        query = (
            select(schema.events)
            .where(schema.events.c.session_id == session_id, schema.events.c.seq > after)
            .order_by(schema.events.c.seq)
        )
        with self.tx() as conn:
            rows = conn.execute(query).mappings().all()
        return [TurnEvent.model_validate(dict(row)) for row in rows]


def _keep_concurrent_uploads(conn: Connection, session_id: str, memory: list[Subject]) -> list[Subject]:
    """The turn's memory, merged with the rows as they are now: a reference uploaded while the turn ran
    wins over the turn's crop, and a subject uploaded meanwhile that the turn never knew is kept."""
    rows = conn.execute(select(schema.subjects.c.data).where(schema.subjects.c.session_id == session_id)).all()
    stored = {subject.id: subject for subject in (Subject.model_validate(row.data) for row in rows)}
    merged = {subject.id: subject for subject in memory}
    for subject_id, current in stored.items():
        if subject_id in merged:
            merged[subject_id] = keep_user_fields(current, merged[subject_id])
        if current.reference_source != ReferenceSource.UPLOAD:
            continue
        turn_view = merged.get(subject_id)
        if turn_view is None:
            merged[subject_id] = current
        elif turn_view.reference_image_id != current.reference_image_id:
            merged[subject_id] = turn_view.model_copy(
                update={
                    "reference_image_id": current.reference_image_id,
                    "reference_source": current.reference_source,
                    "reference_score": current.reference_score,
                    "anchor_cache_id": current.anchor_cache_id,  # the turn's cache went with the old reference
                }
            )
    return list(merged.values())


def _held_by_other(row: Any, owner: str, moment: datetime) -> bool:
    expires = row["lease_expires_at"]
    return row["lease_owner"] not in (None, owner) and expires is not None and _aware(expires) >= moment


def lease_free(table: Table, owner: str | None, moment: datetime) -> Any:
    """The rows of `table` (turns, stories) whose lease `owner` may take at `moment`: no owner, already
    `owner`'s, or expired. With `owner` None: free or expired only."""
    columns = table.c
    free = [columns.lease_owner.is_(None), columns.lease_expires_at < moment]
    if owner is not None:
        free.append(columns.lease_owner == owner)
    return or_(*free)


def _memory_after(conn: Connection, session_id: str, turn_index: int, rows: list[Any]) -> list[Subject]:
    """The subject memory as it was after the session's turn `turn_index` (its row is among `rows`)."""
    row = next((r for r in rows if r["idx"] == turn_index), None)
    if row is None:
        raise LookupError(f"turn {turn_index} not found")
    if row["status"] != TurnStatus.DONE.value:
        raise BranchConflict(f"turn {turn_index} is {row['status']}: only a done turn can be a branch point")
    if row["memory"] is not None:
        return [Subject.model_validate(item) for item in row["memory"]]
    later_done = conn.execute(
        select(schema.turns.c.idx).where(
            schema.turns.c.session_id == session_id,
            schema.turns.c.idx > turn_index,
            schema.turns.c.status == TurnStatus.DONE.value,
        )
    ).first()
    if later_done is not None:
        raise BranchConflict(
            f"turn {turn_index} finished before memory snapshots were stored, and turn {later_done.idx} has "
            f"changed the memory since: branch at the last done turn instead"
        )
    rows_now = conn.execute(select(schema.subjects.c.data).where(schema.subjects.c.session_id == session_id)).all()
    return [Subject.model_validate(r.data) for r in rows_now]


def _images_of(turn: Turn) -> dict[str, str]:
    """The ids of the images a turn record references, with their kind."""
    found = {turn.image_id: "final"} if turn.image_id else {}
    if turn.debug_image_id:
        found.setdefault(turn.debug_image_id, "debug")
    for crop in turn.crops:
        if crop.crop_image_id:
            found.setdefault(crop.crop_image_id, "crop")
    return found


def _branch_title(title: str, turn_index: int) -> str:
    suffix = f" (branch at turn {turn_index})"
    return (title[: 200 - len(suffix)] + suffix).strip()


def _unreferenced(conn: Connection, image_ids: set[str]) -> list[str]:
    if not image_ids:
        return []
    query = select(schema.images.c.id).where(schema.images.c.id.in_(image_ids)).distinct()
    in_stories = select(schema.story_frames.c.image_id).where(schema.story_frames.c.image_id.in_(image_ids))
    return sorted(image_ids - set(conn.execute(query).scalars()) - set(conn.execute(in_stories).scalars()))


def _canonical(request: TurnRequest) -> str:
    """The request as sorted, compact JSON: two bodies that mean the same request compare equal."""
    return json.dumps(request.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))


def _insert_image(conn: Connection, image_id: str, session_id: str, tenant: str, kind: str) -> None:
    exists = conn.execute(
        select(schema.images.c.id).where(schema.images.c.id == image_id, schema.images.c.session_id == session_id)
    ).first()
    if exists is None:
        conn.execute(
            insert(schema.images).values(id=image_id, session_id=session_id, tenant=tenant, kind=kind, created_at=now())
        )


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # transactions are begun by _sqlite_begin, not by the driver, so a writer can take the lock at BEGIN
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.info.pop("sqlite_begin", "BEGIN"))


def _session(row: Any, turn_count: int) -> Session:
    return Session(
        id=row["id"],
        tenant=row["tenant"],
        title=row["title"],
        height=row["height"],
        width=row["width"],
        settings=DrawSettings.model_validate(row["settings"]),
        created_at=_aware(row["created_at"]),
        turn_count=turn_count,
        parent_id=row["parent_id"],
        branch_turn=row["branch_turn"],
    )


def _turn(row: Any) -> Turn:
    return Turn(
        id=row["id"],
        session_id=row["session_id"],
        index=row["idx"],
        status=TurnStatus(row["status"]),
        request=TurnRequest.model_validate(row["request"]),
        plan=TurnPlan.model_validate(row["plan"]) if row["plan"] else None,
        image_id=row["image_id"],
        crops=[CropView.model_validate(c) for c in row["crops"] or []],
        timings=row["timings"] or {},
        info=row["info"] or {},
        error=row["error"],
        created_at=_aware(row["created_at"]),
        finished_at=_aware(row["finished_at"]) if row["finished_at"] else None,
        debug_image_id=row["debug_image_id"],
    )


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
