"""Typed access to the SQL tables. Every method is one short transaction; callers never see SQL."""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from studio.draw import DrawSettings
from studio.plan import TurnPlan
from studio.storage import schema
from studio.subjects import ReferenceSource, Subject, id_key
from studio.turns import CropView, Session, Turn, TurnEvent, TurnRequest, TurnStatus

KEY_PREFIX = "sk-studio-"


def new_id() -> str:
    return uuid.uuid4().hex


def now() -> datetime:
    return datetime.now(UTC)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": 30} if url.startswith("sqlite") else {}
        self.engine: Engine = create_engine(
            url, connect_args=connect_args, pool_pre_ping=True, pool_size=20, max_overflow=20
        )
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._seq_lock = threading.Lock()

    def create_all(self) -> None:
        schema.metadata.create_all(self.engine)

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
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

    def delete_session(self, session_id: str) -> None:
        with self.tx() as conn:
            for table in (schema.events, schema.images, schema.subjects, schema.turns):
                conn.execute(delete(table).where(table.c.session_id == session_id))
            conn.execute(delete(schema.sessions).where(schema.sessions.c.id == session_id))

    def sessions_with_unfinished_turns(self) -> list[str]:
        unfinished = [TurnStatus.QUEUED, TurnStatus.PLANNING, TurnStatus.DRAWING]
        with self.tx() as conn:
            rows = conn.execute(
                select(schema.turns.c.session_id).where(schema.turns.c.status.in_(unfinished)).distinct()
            ).all()
        return [row.session_id for row in rows]

    # --- turns ----------------------------------------------------------------------------------------

    def create_turn(self, session_id: str, request: TurnRequest, idempotency_key: str | None) -> tuple[Turn, bool]:
        """Insert a queued turn with the next index. Returns (turn, created); a repeated idempotency key
        returns the existing turn with created=False."""
        if idempotency_key is not None:
            existing = self.turn_by_idempotency_key(session_id, idempotency_key)
            if existing is not None:
                return existing, False
        for _ in range(5):
            try:
                with self.tx() as conn:
                    index = (
                        conn.execute(
                            select(func.coalesce(func.max(schema.turns.c.idx), 0)).where(
                                schema.turns.c.session_id == session_id
                            )
                        ).scalar_one()
                        + 1
                    )
                    turn_id = new_id()
                    conn.execute(
                        insert(schema.turns).values(
                            id=turn_id,
                            session_id=session_id,
                            idx=index,
                            status=TurnStatus.QUEUED.value,
                            request=request.model_dump(mode="json", exclude_none=True),
                            crops=[],
                            timings={},
                            info={},
                            idempotency_key=idempotency_key,
                            created_at=now(),
                        )
                    )
                turn = self.get_turn(session_id, index)
                assert turn is not None
                return turn, True
            except IntegrityError:
                if idempotency_key is not None:
                    existing = self.turn_by_idempotency_key(session_id, idempotency_key)
                    if existing is not None:
                        return existing, False
        raise RuntimeError("could not allocate a turn index")

    def turn_by_idempotency_key(self, session_id: str, key: str) -> Turn | None:
        query = select(schema.turns).where(
            schema.turns.c.session_id == session_id, schema.turns.c.idempotency_key == key
        )
        with self.tx() as conn:
            row = conn.execute(query).mappings().first()
        return _turn(row) if row else None

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

    def next_unfinished_turn(self, session_id: str) -> Turn | None:
        unfinished = [TurnStatus.QUEUED, TurnStatus.PLANNING, TurnStatus.DRAWING]
        query = (
            select(schema.turns)
            .where(schema.turns.c.session_id == session_id, schema.turns.c.status.in_(unfinished))
            .order_by(schema.turns.c.idx)
            .limit(1)
        )
        with self.tx() as conn:
            row = conn.execute(query).mappings().first()
        return _turn(row) if row else None

    def set_turn_status(self, turn_id: str, status: TurnStatus, **fields: Any) -> None:
        values: dict[str, Any] = {"status": status.value, **fields}
        if status.finished:
            values["finished_at"] = now()
        with self.tx() as conn:
            conn.execute(update(schema.turns).where(schema.turns.c.id == turn_id).values(**values))

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
    ) -> None:
        """One transaction: the turn's record, the subject memory and the image rows. The image files were
        written before this is called, so every row points to a file that exists."""
        with self.tx() as conn:
            for stored_id, kind in image_ids.items():
                _insert_image(conn, stored_id, turn.session_id, tenant, kind)
            memory = _keep_concurrent_uploads(conn, turn.session_id, memory)
            conn.execute(delete(schema.subjects).where(schema.subjects.c.session_id == turn.session_id))
            if memory:
                conn.execute(
                    insert(schema.subjects),
                    [
                        {"session_id": turn.session_id, "subject_id": s.id, "data": s.model_dump(mode="json")}
                        for s in memory
                    ],
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
                )
            )

    # --- subjects and images --------------------------------------------------------------------------

    def list_subjects(self, session_id: str) -> list[Subject]:
        query = select(schema.subjects.c.data).where(schema.subjects.c.session_id == session_id)
        with self.tx() as conn:
            rows = conn.execute(query).all()
        found = [Subject.model_validate(row.data) for row in rows]
        return sorted(found, key=lambda s: id_key(s.id))

    def put_subject(self, session_id: str, tenant: str, subject: Subject, image_id: str | None) -> None:
        with self.tx() as conn:
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

    def image_visible_to(self, image_id: str, tenant: str) -> bool:
        query = select(schema.images.c.id).where(schema.images.c.id == image_id, schema.images.c.tenant == tenant)
        with self.tx() as conn:
            return conn.execute(query.limit(1)).first() is not None

    # --- events ---------------------------------------------------------------------------------------

    def append_event(self, session_id: str, event_: TurnEvent) -> TurnEvent:
        with self._seq_lock, self.tx() as conn:
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
                }
            )
    return list(merged.values())


def _insert_image(conn: Connection, image_id: str, session_id: str, tenant: str, kind: str) -> None:
    exists = conn.execute(
        select(schema.images.c.id).where(schema.images.c.id == image_id, schema.images.c.session_id == session_id)
    ).first()
    if exists is None:
        conn.execute(
            insert(schema.images).values(id=image_id, session_id=session_id, tenant=tenant, kind=kind, created_at=now())
        )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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
