"""The Celery application of the drawer pool: one queue per preset on a Redis broker, late acknowledgement
(a job is acknowledged once its outcome is stored) and redelivery of a job whose worker died."""

from __future__ import annotations

from celery import Celery

from studio.settings import DrawerBackendSettings

DRAW_TASK = "studio.draw"


def make_app(settings: DrawerBackendSettings) -> Celery:
    app = Celery("studio", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # acknowledged after the outcome is stored: a worker that dies leaves the job queued
        task_reject_on_worker_lost=True,  # a pool process killed mid-job puts its job back at once
        worker_prefetch_multiplier=1,  # a worker holds one job: the others stay for idle workers
        worker_concurrency=1,  # one process per GPU
        task_ignore_result=True,  # outcomes go to workers.jobs.JobStore, keyed by job id
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # a job unacknowledged this long (its worker is gone) is delivered to another worker
            "visibility_timeout": settings.visibility_timeout_s,
            # look for such jobs every quarter of that timeout (kombu's default sweep is ~100 s)
            "unacked_restore_interval": max(1.0, min(60.0, settings.visibility_timeout_s / 4)),
            "unacked_restore_throttle": 1,
            # the bookkeeping of unacknowledged jobs is the deployment's own, as its queues are
            "unacked_key": f"{settings.prefix}.unacked",
            "unacked_index_key": f"{settings.prefix}.unacked_index",
            "unacked_mutex_key": f"{settings.prefix}.unacked_mutex",
            "socket_connect_timeout": settings.connect_timeout_s,
        },
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app
