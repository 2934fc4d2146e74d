"""A draw job's identity and its records in Redis: the outcome (stored before the job is acknowledged, so a
finished picture survives the API process that waits for it), progress channel, cancel flag, attempts."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import redis
from pydantic import BaseModel, Field

from studio.draw import DrawResult
from studio.fast_mode import PREVIEW_MAX_BYTES, PreviewImage


def queue_name(prefix: str, preset: str) -> str:
    """The Celery queue (a Redis list of that name) of one preset's jobs."""
    return f"{prefix}.draw.{preset}"


class JobOutcome(BaseModel):
    """What a worker leaves for a job: the picture, or why there is none."""

    model_config = {"ser_json_bytes": "base64", "val_json_bytes": "base64"}

    status: Literal["done", "failed", "cancelled"]
    result: DrawResult | None = None
    reason: str | None = None
    info: dict[str, Any] = Field(default_factory=dict)
    attempts: int = 0
    worker: str = ""
    enqueued_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = Field(default_factory=time.time)


class JobStore:
    """The Redis keys of the jobs of one deployment (`prefix`)."""

    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int = 86400) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def key(self, job_id: str, part: str) -> str:
        return f"{self.prefix}:job:{job_id}:{part}"

    def channel(self, job_id: str) -> str:
        return self.key(job_id, "progress")

    def outcome(self, job_id: str) -> JobOutcome | None:
        raw = self.redis.get(self.key(job_id, "outcome"))
        return None if raw is None else JobOutcome.model_validate_json(raw)

    def put_outcome(self, job_id: str, outcome: JobOutcome) -> None:
        self.redis.set(self.key(job_id, "outcome"), outcome.model_dump_json(), ex=self.ttl_s)
        self.redis.publish(self.channel(job_id), '{"finished": true}')

    def publish_step(self, job_id: str, step: int, total: int) -> None:
        self.redis.publish(self.channel(job_id), f'{{"step": {step}, "total": {total}}}')

    def publish_preview(self, job_id: str, image: PreviewImage) -> bool:
        """Relay one live preview on the progress channel (`{"preview": {...}}`, the image base64-encoded, as the
        `preview` turn event carries it). One over PREVIEW_MAX_BYTES is dropped, not sent: False."""
        if len(image.data) > PREVIEW_MAX_BYTES:
            return False
        self.redis.publish(self.channel(job_id), json.dumps({"preview": image.event_data()}))
        return True

    def mark_sent(self, job_id: str) -> bool:
        """True the first time only: a job resumed after a restart is not queued a second time."""
        return bool(self.redis.set(self.key(job_id, "sent"), "1", nx=True, ex=self.ttl_s))

    def request_cancel(self, job_id: str) -> None:
        self.redis.set(self.key(job_id, "cancel"), "1", ex=self.ttl_s)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.key(job_id, "cancel")))

    def forget(self, job_id: str) -> None:
        """Drop a cancelled job's records, so that it can be sent and drawn again."""
        self.redis.delete(*(self.key(job_id, part) for part in ("outcome", "sent", "cancel")))

    def next_attempt(self, job_id: str) -> int:
        key = self.key(job_id, "attempts")
        attempt = int(self.redis.incr(key))
        self.redis.expire(key, self.ttl_s)
        return attempt

    def claim(self, job_id: str, worker: str, lease_s: int) -> bool:
        """Hold the job while drawing it (a delivery repeated while its worker lives waits for it)."""
        key = self.key(job_id, "lease")
        return bool(self.redis.set(key, worker, nx=True, ex=lease_s)) or self.redis.get(key) == worker.encode()

    def renew(self, job_id: str, lease_s: int) -> None:
        self.redis.expire(self.key(job_id, "lease"), lease_s)

    def release(self, job_id: str) -> None:
        self.redis.delete(self.key(job_id, "lease"))


def redis_client(url: str, timeout_s: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=max(timeout_s, 5.0))
