"""`studio worker`: one Celery worker process drawing one preset's jobs. The models load once, when the
worker's pool process starts, and stay warm; a heartbeat in Redis says which job it draws."""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_process_shutdown

from studio.cancellation import StoredCancel
from studio.draw import DrawJob
from studio.failures import DrawCancelled, TurnFailure, clip_reason
from studio.fast_mode import StepReporter
from studio.protocols import Drawer, StepCallback
from studio.settings import Settings
from workers.app import DRAW_TASK, make_app
from workers.jobs import JobOutcome, JobStore, queue_name, redis_client
from workers.pool import PoolRecords, WorkerBeat

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.2


def load_drawer(settings: Settings, preset: str) -> Drawer:
    """The drawer of `preset`: the settings' factory ('module:function', called with (settings, preset)),
    else the preset's models and the vision locator, loaded now."""
    if settings.drawer.factory:
        module, _, function = settings.drawer.factory.partition(":")
        return getattr(importlib.import_module(module), function)(settings, preset)
    from entrypoints.runtime import PresetDrawer

    drawer = PresetDrawer(settings)
    drawer.drawer(preset)  # load now, not on the first job
    return drawer


class WorkerRuntime:
    """The warm drawer of one pool process, and how it runs a job."""

    def __init__(self, settings: Settings, preset: str, name: str, drawer: Drawer) -> None:
        self.settings = settings
        self.preset = preset
        self.name = name
        self.drawer = drawer
        client = redis_client(settings.drawer.broker_url, settings.drawer.connect_timeout_s)
        self.jobs = JobStore(client, settings.drawer.prefix, settings.drawer.result_ttl_s)
        self.records = PoolRecords(client, settings.drawer.prefix)
        self.lease_s = max(1, round(3 * settings.drawer.heartbeat_s))
        self.beat = WorkerBeat(
            name=name,
            preset=preset,
            device=settings.preset(preset).device,
            pid=os.getpid(),
            started_at=time.time(),
            beat_at=time.time(),
        )
        self._stop = threading.Event()
        self._heart = threading.Thread(target=self._heartbeat, name="studio-heartbeat", daemon=True)
        self._heart.start()

    def _heartbeat(self) -> None:
        while not self._stop.is_set():
            try:
                self.beat.beat_at = time.time()
                self.records.beat(self.beat, ttl_s=3 * self.settings.drawer.heartbeat_s)
                if self.beat.current_job is not None:
                    self.jobs.renew(self.beat.current_job, self.lease_s)
            except Exception:  # Redis away for a moment: the next beat tries again
                log.warning("heartbeat failed", exc_info=True)
            self._stop.wait(self.settings.drawer.heartbeat_s)

    def stop(self) -> None:
        self._stop.set()
        try:
            self.records.leave(self.name)
        except Exception:
            log.warning("could not remove the heartbeat", exc_info=True)

    def run(self, task: Task, job_id: str, job_json: str, enqueued_at: float) -> str:
        if self.jobs.outcome(job_id) is not None:
            return "already finished"  # a repeated delivery of a job whose outcome is stored
        if not self.jobs.claim(job_id, self.name, self.lease_s):
            # another live worker draws it (delivered again after the visibility timeout): look again later
            raise task.retry(countdown=self.lease_s, max_retries=None)
        try:
            return self._run_claimed(task, job_id, job_json, enqueued_at)
        finally:
            self.beat.current_job = None
            self.jobs.release(job_id)

    def _progress(self, job_id: str, job: DrawJob) -> StepCallback:
        """The step callback handed to the drawer: steps go to the job's progress channel, and so do live
        previews when the job wants them (a StepReporter, whose `preview` the drawer finds); without previews
        it has no `preview` method, so the drawer decodes and publishes nothing more."""

        def step(s: int, t: int) -> None:
            self.jobs.publish_step(job_id, s, t)

        if not job.settings.wants_previews:
            return step
        return StepReporter(step, lambda image: self.jobs.publish_preview(job_id, image))

    def _run_claimed(self, task: Task, job_id: str, job_json: str, enqueued_at: float) -> str:
        started = time.time()
        self.records.observe(self.preset, "queue", max(0.0, started - enqueued_at))
        common: dict[str, Any] = {"worker": self.name, "enqueued_at": enqueued_at, "started_at": started}
        if self.jobs.cancel_requested(job_id):
            self.jobs.put_outcome(job_id, JobOutcome(status="cancelled", **common))
            return "cancelled"
        attempt = self.jobs.next_attempt(job_id)
        limit = self.settings.drawer.max_attempts
        if attempt > limit:
            reason = f"the drawer workers gave up on this job after {limit} attempts (each ended by a crash or error)"
            self.jobs.put_outcome(job_id, JobOutcome(status="failed", reason=reason, attempts=limit, **common))
            return "gave up"
        common["attempts"] = attempt
        self.beat.current_job = job_id
        cancel = StoredCancel(lambda: self.jobs.cancel_requested(job_id), CANCEL_POLL_SECONDS)
        try:
            job = DrawJob.model_validate_json(job_json)
            result = self.drawer.draw(job, on_step=self._progress(job_id, job), cancel=cancel)
        except DrawCancelled:
            self.jobs.put_outcome(job_id, JobOutcome(status="cancelled", **common))
            return "cancelled"
        except TurnFailure as exc:  # deterministic: drawing again gives the same answer
            self.jobs.put_outcome(job_id, JobOutcome(status="failed", reason=exc.reason, info=exc.info, **common))
            return "failed"
        except Exception as exc:
            log.exception("job %s: attempt %d of %d failed", job_id, attempt, limit)
            if attempt >= limit:
                reason = clip_reason(f"drawer error after {attempt} attempts: {type(exc).__name__}: {exc}")
                self.jobs.put_outcome(job_id, JobOutcome(status="failed", reason=reason, **common))
                return "failed"
            raise task.retry(countdown=1, max_retries=None) from exc
        self.jobs.put_outcome(job_id, JobOutcome(status="done", result=result, **common))
        self.records.observe(self.preset, "draw", time.time() - started)
        self.beat.jobs_done += 1
        return "done"


_runtime: WorkerRuntime | None = None


def build_worker_app(settings: Settings, preset: str, name: str) -> Celery:
    """The Celery app of a worker of `preset`: its draw task, and the models loaded in each pool process."""
    app = make_app(settings.drawer)

    @app.task(name=DRAW_TASK, bind=True)
    def draw(task: Task, job_id: str, job_json: str, enqueued_at: float) -> str:
        if _runtime is None:
            raise RuntimeError("the worker's models are not loaded")
        return _runtime.run(task, job_id, job_json, enqueued_at)

    def load(**_: Any) -> None:
        global _runtime
        _runtime = WorkerRuntime(settings, preset, name, load_drawer(settings, preset))
        log.info("worker %s: %s loaded, taking jobs from %s", name, preset, queue_name(settings.drawer.prefix, preset))

    def unload(**_: Any) -> None:
        if _runtime is not None:
            _runtime.stop()

    worker_process_init.connect(load, weak=False)
    worker_process_shutdown.connect(unload, weak=False)
    return app


def run_worker(settings: Settings, preset: str, device: str | None = None, loglevel: str = "INFO") -> None:
    """Run a worker in this process until it is stopped (SIGTERM: warm shutdown, the current job finishes)."""
    if device:
        presets = dict(settings.presets)
        presets[preset] = settings.preset(preset).model_copy(update={"device": device})
        vision = settings.vision.model_copy(update={"device": device})
        settings = settings.model_copy(update={"presets": presets, "vision": vision})
    settings.preset(preset)  # unknown preset: fail before starting
    name = f"{preset}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    app = build_worker_app(settings, preset, name)
    queue = queue_name(settings.drawer.prefix, preset)
    app.worker_main(
        ["worker", "-Q", queue, "-c", "1", "-P", "prefork", "--prefetch-multiplier", "1", "-n", name,
         "-l", loglevel, "--without-gossip", "--without-mingle"]
    )
