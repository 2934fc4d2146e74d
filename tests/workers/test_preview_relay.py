"""Live previews on the drawer pool (docs/fast_mode.md, docs/scaleout.md): the worker relays the previews its
drawer hands to the step callback's sink over the job's progress channel, size-capped, and CeleryDrawer hands
them to its caller's preview sink; with previews off nothing more is published (real Redis and `studio worker`
processes, the previewing test drawer)."""

from __future__ import annotations

from collections.abc import Callable

from studio.draw import DrawJob, DrawSettings
from studio.fast_mode import PreviewImage, StepReporter
from studio.plan import TurnPlan
from studio.service import TurnService
from studio.settings import DrawerBackendSettings
from studio.turns import TurnRequest, TurnStatus
from tests.workers.conftest import Workers, finished_turn
from tests.workers.drawers import PREVIEWS_PER_JOB, preview_image
from workers.drawer_client import CeleryDrawer

FACTORY = "tests.workers.drawers:previewing_drawer"
PLAN = TurnPlan(height=64, width=64, background="a room")


def draw(
    pool_settings: DrawerBackendSettings, previews: bool, seed: int
) -> tuple[list[tuple[int, int]], list[PreviewImage]]:
    steps: list[tuple[int, int]] = []
    images: list[PreviewImage] = []
    job = DrawJob(plan=PLAN, settings=DrawSettings(steps=2, seed=seed, previews=previews))
    result = CeleryDrawer(pool_settings).draw(
        job, on_step=StepReporter(lambda s, t: steps.append((s, t)), images.append)
    )
    assert result.width == 64
    return steps, images


def test_the_worker_relays_each_preview_to_the_callers_sink(
    workers: Workers, pool_settings: DrawerBackendSettings
) -> None:
    workers.start(STUDIO_DRAWER__FACTORY=FACTORY)
    steps, images = draw(pool_settings, previews=True, seed=1)
    assert steps == [(1, 2), (2, 2)]
    # k previews from the drawer, k at the caller, the same bytes; the oversized one was not published
    assert images == [preview_image(step, PREVIEWS_PER_JOB) for step in range(1, PREVIEWS_PER_JOB + 1)]


def test_previews_off_publish_and_relay_none(workers: Workers, pool_settings: DrawerBackendSettings) -> None:
    workers.start(STUDIO_DRAWER__FACTORY=FACTORY)
    steps, images = draw(pool_settings, previews=False, seed=2)
    assert steps == [(1, 2), (2, 2)] and images == []


def test_a_caller_without_a_sink_gets_its_steps(workers: Workers, pool_settings: DrawerBackendSettings) -> None:
    workers.start(STUDIO_DRAWER__FACTORY=FACTORY)
    steps: list[int] = []
    job = DrawJob(plan=PLAN, settings=DrawSettings(steps=2, seed=3, previews=True))
    CeleryDrawer(pool_settings).draw(job, on_step=lambda s, t: steps.append(s))
    assert steps == [1, 2]


def test_a_pool_turn_stores_the_preview_events(pool_service: Callable[..., TurnService], workers: Workers) -> None:
    workers.start(STUDIO_DRAWER__FACTORY=FACTORY)
    service = pool_service()
    session = service.create_session("t", "previews", 64, 64, DrawSettings(steps=2, seed=4, previews=True))
    turn = service.submit_turn(session, TurnRequest(plan=PLAN))
    done = finished_turn(service, session.id, turn.index)
    assert done.status == TurnStatus.DONE, done.error
    events = [e for e in service.db.events_after(session.id, 0) if e.type == "preview"]
    stored = [PreviewImage.from_event_data(e.data) for e in events]
    assert stored == [preview_image(step, PREVIEWS_PER_JOB) for step in range(1, PREVIEWS_PER_JOB + 1)]
