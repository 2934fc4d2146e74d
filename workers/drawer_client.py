"""CeleryDrawer: the API side of the drawer pool. A studio.protocols.Drawer that sends each job to its preset's
queue, relays the worker's steps, passes a cancel on, and reads the outcome the worker stored."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis
from kombu.exceptions import OperationalError

from studio.draw import DrawJob, DrawResult
from studio.failures import DrawCancelled, DrawError
from studio.fast_mode import PreviewImage, preview_sink
from studio.protocols import StepCallback
from studio.rejections import BackendUnavailable
from studio.settings import DrawerBackendSettings
from workers.app import DRAW_TASK, make_app
from workers.jobs import JobOutcome, JobStore, queue_name, redis_client
from workers.scope import job_id_for

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
"""How long one wait for a progress message lasts; the cancel signal and the outcome are checked in between."""


class CeleryDrawer:
    def __init__(self, settings: DrawerBackendSettings) -> None:
        self.settings = settings
        self.app = make_app(settings)
        self.redis = redis_client(settings.broker_url, settings.connect_timeout_s)
        self.jobs = JobStore(self.redis, settings.prefix, settings.result_ttl_s)

    def check_reachable(self) -> None:
        """Raise BackendUnavailable unless the broker answers within the connect timeout."""
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise BackendUnavailable(
                f"the drawer pool's broker at {_safe(self.settings.broker_url)} is unreachable ({exc}); "
                "no turn was stored: try again shortly"
            ) from exc

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        job_id = job_id_for(job)
        deadline = time.monotonic() + self.settings.result_timeout_s
        outcome = self._wait(job_id, job, deadline, on_step, cancel)
        if outcome.status == "cancelled":
            raise DrawCancelled
        if outcome.status == "failed" or outcome.result is None:
            raise DrawError(outcome.reason or "the drawer worker failed", info={"job_id": job_id, **outcome.info})
        return outcome.result

    def _wait(
        self,
        job_id: str,
        job: DrawJob,
        deadline: float,
        on_step: StepCallback | None,
        cancel: threading.Event | None,
    ) -> JobOutcome:
        """Send the job (once, even across restarts) and follow it until its outcome is stored. A broker that
        goes away is waited for until the deadline: the job is not lost, it is in Redis or on a worker."""
        pubsub = None
        sent = False
        finished = False  # the `finished` message was read: every step and preview before it was too
        while True:
            if cancel is not None and cancel.is_set():
                self._try(lambda: self.jobs.request_cancel(job_id))
                raise DrawCancelled
            if time.monotonic() > deadline:
                raise DrawError(
                    f"no drawer worker finished the job within {self.settings.result_timeout_s:g} s "
                    f"(queue {queue_name(self.settings.prefix, job.settings.preset)})",
                    info={"job_id": job_id},
                )
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.jobs.channel(job_id))  # before sending: no step is missed
                outcome = self.jobs.outcome(job_id)
                if outcome is not None and outcome.status == "cancelled":
                    # cancelled by a process that stopped (a shutdown cancels too): this turn still wants its
                    # picture, so the job is drawn again
                    self.jobs.forget(job_id)
                    sent, finished = False, False
                elif outcome is not None:
                    if not finished:
                        self._drain(pubsub, on_step)  # steps and previews published before the outcome
                    return outcome
                if not sent:
                    self._send(job_id, job)
                    sent = True
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is not None:
                    finished = _relay(message, on_step) or finished
            except (redis.RedisError, OperationalError, OSError) as exc:
                log.warning("job %s: broker unreachable (%s); waiting for it", job_id, exc)
                # once it is back, send again unless its record of the job survived (a broker restarted
                # without persistence lost its queue too)
                pubsub, sent, finished = None, False, False
                time.sleep(POLL_SECONDS)

    def _drain(self, pubsub: Any, on_step: StepCallback | None) -> None:
        """Relay what is still buffered on the progress channel, up to the `finished` message (or a quiet
        poll, for an outcome stored before this client subscribed)."""
        while (message := pubsub.get_message(timeout=POLL_SECONDS)) is not None:
            if _relay(message, on_step):
                return

    def _send(self, job_id: str, job: DrawJob) -> None:
        if not self.jobs.mark_sent(job_id):
            return  # sent before a restart: it is queued or drawn, its outcome will be stored
        try:
            self.app.send_task(
                DRAW_TASK,
                args=[job_id, job.model_dump_json(), time.time()],
                queue=queue_name(self.settings.prefix, job.settings.preset),
                task_id=job_id,
                retry=False,
            )
        except Exception:
            self.redis.delete(self.jobs.key(job_id, "sent"))  # not sent: the next try sends it
            raise

    def _try(self, action: Any) -> None:
        try:
            action()
        except redis.RedisError:
            log.warning("could not reach the broker", exc_info=True)

    def close(self) -> None:
        self.redis.close()


def _relay(message: dict[str, Any], on_step: StepCallback | None) -> bool:
    """Hand one progress message to the caller: a step to `on_step`, a preview to its preview sink (none is
    relayed to a caller without one; a malformed preview is dropped). True for the `finished` message."""
    progress = json.loads(message["data"])
    if "step" in progress and on_step is not None:
        on_step(progress["step"], progress["total"])
    elif "preview" in progress and (sink := preview_sink(on_step)) is not None:
        try:
            image = PreviewImage.from_event_data(progress["preview"])
        except (ValueError, KeyError, TypeError):
            log.warning("dropped a malformed preview message")
            return False
        sink(image)
    return bool(progress.get("finished"))


def _safe(url: str) -> str:
    """The URL without its password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://…@{rest.rpartition('@')[2]}"
