"""The pool as Redis sees it: worker heartbeats, queue depth per preset, job duration histograms. Written by
the workers, read by /metrics and `studio status`."""

from __future__ import annotations

import json
import time
from typing import Any

import redis
from pydantic import BaseModel

from workers.jobs import queue_name

DURATION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
STAGES = ("queue", "draw")
"""queue: enqueued → a worker starts it; draw: started → outcome stored."""


class WorkerBeat(BaseModel):
    name: str
    preset: str
    device: str
    pid: int
    started_at: float
    beat_at: float
    current_job: str | None = None
    jobs_done: int = 0


class PoolRecords:
    """Heartbeats and duration histograms of one deployment (`prefix`)."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.redis = client
        self.prefix = prefix

    def _beat_key(self, name: str) -> str:
        return f"{self.prefix}:worker:{name}"

    def _stats_key(self, preset: str, stage: str) -> str:
        return f"{self.prefix}:stats:{preset}:{stage}"

    def beat(self, beat: WorkerBeat, ttl_s: float) -> None:
        self.redis.set(self._beat_key(beat.name), beat.model_dump_json(), px=int(ttl_s * 1000))

    def leave(self, name: str) -> None:
        self.redis.delete(self._beat_key(name))

    def workers(self) -> list[WorkerBeat]:
        keys = sorted(self.redis.scan_iter(match=self._beat_key("*"), count=500))
        raws = self.redis.mget(keys) if keys else []
        return [WorkerBeat.model_validate_json(raw) for raw in raws if raw is not None]

    def queue_depth(self, preset: str) -> int:
        return int(self.redis.llen(queue_name(self.prefix, preset)))

    def observe(self, preset: str, stage: str, seconds: float) -> None:
        """Add one duration to the preset's cumulative histogram (Prometheus semantics: bucket counts are `le`)."""
        key = self._stats_key(preset, stage)
        pipe = self.redis.pipeline()
        for bound in DURATION_BUCKETS:
            if seconds <= bound:
                pipe.hincrby(key, f"le:{bound}", 1)
        pipe.hincrby(key, "count", 1)
        pipe.hincrbyfloat(key, "sum", seconds)
        pipe.execute()

    def histogram(self, preset: str, stage: str) -> tuple[list[tuple[str, int]], int, float]:
        """(cumulative buckets incl. +Inf, count, sum)."""
        raw = {k.decode(): v.decode() for k, v in self.redis.hgetall(self._stats_key(preset, stage)).items()}
        count = int(raw.get("count", 0))
        buckets = [(str(float(bound)), int(raw.get(f"le:{bound}", 0))) for bound in DURATION_BUCKETS]
        return [*buckets, ("+Inf", count)], count, float(raw.get("sum", 0.0))

    def snapshot(self, presets: list[str]) -> dict[str, Any]:
        """Per preset: live workers, jobs in flight, queue depth; and every worker's heartbeat."""
        now = time.time()
        workers = self.workers()
        names = sorted(set(presets) | {w.preset for w in workers})
        per_preset = {
            name: {
                "workers": sum(w.preset == name for w in workers),
                "in_flight": sum(w.preset == name and w.current_job is not None for w in workers),
                "queued": self.queue_depth(name),
            }
            for name in names
        }
        beats = [{**json.loads(w.model_dump_json()), "age_s": round(now - w.beat_at, 2)} for w in workers]
        return {"presets": per_preset, "workers": beats}
