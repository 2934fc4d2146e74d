"""Operating the pool: /metrics and `studio status` read it from Redis; SIGTERM lets a worker finish its job."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from api.app import create_app
from entrypoints.cli import app as cli
from studio.draw import DrawJob, DrawResult, DrawSettings
from studio.plan import TurnPlan
from studio.service import TurnService
from studio.settings import DrawerBackendSettings
from tests.workers.conftest import Workers, settings_env, wait_until
from workers.app import DRAW_TASK
from workers.drawer_client import CeleryDrawer
from workers.jobs import queue_name

JOB = DrawJob(plan=TurnPlan(height=64, width=64, background="a room"), settings=DrawSettings(steps=4, seed=1))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_and_status_show_the_pool(
    pool_service: Callable[..., TurnService], workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    workers.start()
    drawer = CeleryDrawer(pool_settings)
    drawer.draw(JOB)
    # a job for a preset no worker holds waits in its queue
    drawer.app.send_task(DRAW_TASK, args=["waiting", JOB.model_dump_json(), time.time()],
                         queue=queue_name(pool_settings.prefix, "tiny-sdxl"))

    service = pool_service()
    with TestClient(create_app(service)) as client:
        metrics = samples(client.get("/metrics").text)
    assert metrics[("studio_pool_up", ())] == 1
    assert metrics[("studio_pool_workers", (("preset", "tiny"),))] == 1
    assert metrics[("studio_pool_jobs_in_flight", (("preset", "tiny"),))] == 0
    assert metrics[("studio_pool_queue_depth", (("preset", "tiny-sdxl"),))] == 1
    assert metrics[("studio_pool_queue_depth", (("preset", "tiny"),))] == 0
    assert metrics[("studio_job_seconds_count", (("preset", "tiny"), ("stage", "draw")))] == 1
    assert metrics[("studio_job_seconds_count", (("preset", "tiny"), ("stage", "queue")))] == 1

    # the worker counts the job in its next heartbeat (every heartbeat_s), not when the outcome is stored
    wait_until(lambda: [b.jobs_done for b in workers.records.workers()] == [1], 30, "the heartbeat after the job")
    result = CliRunner().invoke(cli, ["status", "--json"], env=settings_env(pool_settings))
    assert result.exit_code == 0, result.output
    snapshot = json.loads(result.stdout)
    assert snapshot["presets"]["tiny"] == {"workers": 1, "in_flight": 0, "queued": 0}
    assert snapshot["presets"]["tiny-sdxl"]["queued"] == 1
    [beat] = snapshot["workers"]
    assert beat["preset"] == "tiny" and beat["jobs_done"] == 1


def test_metrics_say_when_the_pool_is_unreadable(
    pool_service: Callable[..., TurnService], pool_settings: DrawerBackendSettings
) -> None:
    from entrypoints.server import free_port

    service = pool_service(broker_url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.3)
    with TestClient(create_app(service)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert samples(response.text)[("studio_pool_up", ())] == 0


def test_sigterm_lets_the_worker_finish_its_job(workers: Workers, pool_settings: DrawerBackendSettings) -> None:
    process = workers.start(STUDIO_TEST_STEP_SECONDS="0.5")
    results: list[DrawResult] = []
    drawing = threading.Thread(target=lambda: results.append(CeleryDrawer(pool_settings).draw(JOB)))
    drawing.start()

    def busy() -> bool:
        beat = workers.beat_of(process)
        return beat is not None and beat.current_job is not None

    wait_until(busy, 30, "the worker to take the job")
    os.kill(process.pid, signal.SIGTERM)  # warm shutdown
    drawing.join(timeout=60)
    assert len(results) == 1 and results[0].width == 64
    assert process.wait(timeout=30) == 0
