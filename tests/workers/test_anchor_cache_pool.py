"""The ConsiStory anchor cache on the drawer pool: a worker process shares no memory with the API, so the job
carries the subject memory's cache to it and the worker's new cache comes back in the outcome to be stored
(real Redis, PostgreSQL and `studio worker` processes)."""

from __future__ import annotations

from collections.abc import Callable

from studio.draw import DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.service import TurnService
from studio.turns import TurnRequest, TurnStatus
from tests.workers.conftest import Workers, finished_turn
from tests.workers.drawers import anchor_echo

SETTINGS = DrawSettings(steps=2, seed=7, mechanisms=["regional", "shared_attention"])
PLAN = TurnPlan(
    height=64, width=64, items=[PlanItem(subject_id="1", phrase="a girl", box=Box(x=0, y=0, w=32, h=32))]
)


def test_the_anchor_cache_reaches_the_worker_and_its_new_one_is_stored(
    pool_service: Callable[..., TurnService], workers: Workers
) -> None:
    workers.start(STUDIO_DRAWER__FACTORY="tests.workers.drawers:anchor_drawer")
    service = pool_service()
    session = service.create_session("t", "anchors", 64, 64, SETTINGS)

    def cache_after(index: int) -> bytes:
        turn = service.submit_turn(session, TurnRequest(plan=PLAN))
        done = finished_turn(service, session.id, turn.index)
        assert done.status == TurnStatus.DONE, done.error
        [subject] = service.db.list_subjects(session.id)
        assert subject.anchor_cache_id is not None
        return service.images.get(subject.anchor_cache_id)

    first = cache_after(1)
    assert first == anchor_echo("1", None)  # turn 1 carried none; the worker's cache was stored
    assert cache_after(2) == anchor_echo("1", first)  # turn 2 carried turn 1's cache to the worker
