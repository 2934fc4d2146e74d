"""Typed access to the story tables (stories, story_frames). Every method is one short transaction.

A frame row is written once its image file is stored, so the frames present are exactly the finished ones: a
process that takes over an unfinished story (its lease expired, or the service restarted) continues with the
first missing frame of the current round and never redraws a finished one."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from studio.storage import schema
from studio.storage.database import Database, _aware, lease_free, new_id, now
from studio.stories import Story, StoryCreate, StoryFrame, StoryStatus

UNFINISHED_STORIES = [StoryStatus.QUEUED.value, StoryStatus.RUNNING.value]


class StoryStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, tenant: str, request: StoryCreate, seed: int) -> Story:
        story_id = new_id()
        with self.db.tx() as conn:
            conn.execute(
                insert(schema.stories).values(
                    id=story_id,
                    tenant=tenant,
                    title=request.title,
                    status=StoryStatus.QUEUED.value,
                    request=request.model_dump(mode="json"),
                    seed=seed,
                    current_round=0,
                    cancel_requested=False,
                    created_at=now(),
                )
            )
        story = self.get(story_id)
        assert story is not None
        return story

    def get(self, story_id: str, tenant: str | None = None, with_frames: bool = False) -> Story | None:
        query = select(schema.stories).where(schema.stories.c.id == story_id)
        if tenant is not None:
            query = query.where(schema.stories.c.tenant == tenant)
        with self.db.tx() as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            done = conn.execute(
                select(func.count()).select_from(schema.story_frames).where(schema.story_frames.c.story_id == story_id)
            ).scalar_one()
        story = _story(row, done)
        if with_frames:
            story.rounds = self.frames_by_round(story)
        return story

    def list(self, tenant: str, limit: int = 100, offset: int = 0) -> list[Story]:
        frames = schema.story_frames
        done = (
            select(func.count()).select_from(frames).where(frames.c.story_id == schema.stories.c.id).scalar_subquery()
        )
        query = (
            select(schema.stories, done.label("frames_done"))
            .where(schema.stories.c.tenant == tenant)
            .order_by(schema.stories.c.created_at.desc(), schema.stories.c.id)
            .limit(limit)
            .offset(offset)
        )
        with self.db.tx() as conn:
            return [_story(row, row.frames_done) for row in conn.execute(query).all()]

    def frames(self, story_id: str, round_index: int | None = None) -> list[StoryFrame]:
        """The drawn frames (of one round, or all), ordered by round then frame."""
        table = schema.story_frames
        query = select(table).where(table.c.story_id == story_id).order_by(table.c.round, table.c.idx)
        if round_index is not None:
            query = query.where(table.c.round == round_index)
        with self.db.tx() as conn:
            rows = conn.execute(query).all()
        return [StoryFrame(round=r.round, index=r.idx, image_id=r.image_id, seconds=r.seconds) for r in rows]

    def frames_by_round(self, story: Story) -> list[list[StoryFrame]]:
        rounds: list[list[StoryFrame]] = [[] for _ in range(story.current_round + 1)]
        for frame in self.frames(story.id):
            if frame.round < len(rounds):
                rounds[frame.round].append(frame)
        return rounds

    def add_frame(
        self, story_id: str, owner: str, round_index: int, frame_index: int, image_id: str, seconds: float
    ) -> bool:
        """Record a drawn frame; False when the story is gone or another process holds it now (nothing written)."""
        with self.db.tx() as conn:
            if not _holds(conn, story_id, owner):
                return False
            conn.execute(
                insert(schema.story_frames).values(
                    story_id=story_id,
                    round=round_index,
                    idx=frame_index,
                    image_id=image_id,
                    seconds=seconds,
                    created_at=now(),
                )
            )
        return True

    def claim(self, story_id: str, owner: str, lease_seconds: float) -> Story | None:
        """Take the unfinished story's lease (free, expired, or already this owner's) and mark it running."""
        moment = now()
        table = schema.stories
        with self.db.tx() as conn:
            claimed = conn.execute(
                update(table)
                .where(
                    table.c.id == story_id,
                    table.c.status.in_(UNFINISHED_STORIES),
                    lease_free(table, owner, moment),
                )
                .values(
                    status=StoryStatus.RUNNING.value,
                    lease_owner=owner,
                    lease_expires_at=moment + timedelta(seconds=lease_seconds),
                )
            ).rowcount
        return self.get(story_id) if claimed else None

    def renew(self, story_id: str, owner: str, lease_seconds: float) -> bool:
        table = schema.stories
        with self.db.tx() as conn:
            return bool(
                conn.execute(
                    update(table)
                    .where(table.c.id == story_id, table.c.lease_owner == owner)
                    .values(lease_expires_at=now() + timedelta(seconds=lease_seconds))
                ).rowcount
            )

    def release(self, story_id: str, owner: str) -> None:
        table = schema.stories
        with self.db.tx() as conn:
            conn.execute(
                update(table)
                .where(table.c.id == story_id, table.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def advance_round(self, story_id: str, owner: str, round_index: int) -> bool:
        return self._update_held(story_id, owner, current_round=round_index)

    def finish(self, story_id: str, owner: str, status: StoryStatus, error: str | None = None) -> bool:
        return self._update_held(
            story_id,
            owner,
            status=status.value,
            error=error,
            finished_at=now(),
            lease_owner=None,
            lease_expires_at=None,
        )

    def _update_held(self, story_id: str, owner: str, **values: Any) -> bool:
        table = schema.stories
        with self.db.tx() as conn:
            return bool(
                conn.execute(
                    update(table).where(table.c.id == story_id, table.c.lease_owner == owner).values(**values)
                ).rowcount
            )

    def request_cancel(self, story_id: str) -> bool:
        """Store a cancel on an unfinished story; False when it has already finished."""
        table = schema.stories
        with self.db.tx() as conn:
            return bool(
                conn.execute(
                    update(table)
                    .where(table.c.id == story_id, table.c.status.in_(UNFINISHED_STORIES))
                    .values(cancel_requested=True)
                ).rowcount
            )

    def cancel_requested(self, story_id: str) -> bool:
        """True when a cancel was stored, or the story was deleted."""
        with self.db.tx() as conn:
            flag = conn.execute(
                select(schema.stories.c.cancel_requested).where(schema.stories.c.id == story_id)
            ).scalar_one_or_none()
        return flag is None or bool(flag)

    def claimable(self) -> list[str]:
        """Unfinished stories whose lease is free or expired, oldest first."""
        table = schema.stories
        query = (
            select(table.c.id)
            .where(
                table.c.status.in_(UNFINISHED_STORIES),
                lease_free(table, None, now()),
            )
            .order_by(table.c.created_at)
        )
        with self.db.tx() as conn:
            return list(conn.execute(query).scalars())

    def delete(self, story_id: str) -> list[str]:
        """Delete the story and its frames; returns the image ids that no session or story references now."""
        frames = schema.story_frames
        with self.db.tx() as conn:
            ids = set(conn.execute(select(frames.c.image_id).where(frames.c.story_id == story_id)).scalars())
            conn.execute(delete(frames).where(frames.c.story_id == story_id))
            conn.execute(delete(schema.stories).where(schema.stories.c.id == story_id))
        return self.db.unreferenced_images(ids)


def _holds(conn: Any, story_id: str, owner: str) -> bool:
    table = schema.stories
    row = conn.execute(select(table.c.lease_owner).where(table.c.id == story_id)).first()
    return row is not None and row.lease_owner == owner


def _story(row: Any, frames_done: int) -> Story:
    request = StoryCreate.model_validate(row.request)
    frame_count = len(request.prompts)
    round_count = request.rounds + 1
    return Story(
        id=row.id,
        tenant=row.tenant,
        title=row.title,
        status=StoryStatus(row.status),
        request=request,
        seed=row.seed,
        frame_count=frame_count,
        round_count=round_count,
        current_round=row.current_round,
        frames_done=frames_done,
        frames_total=frame_count * round_count,
        error=row.error,
        created_at=_aware(row.created_at),  # SQLite hands back naive UTC
        finished_at=_aware(row.finished_at) if row.finished_at else None,
    )
