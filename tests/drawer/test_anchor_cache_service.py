"""The anchor cache is part of the subject memory: stored with the subject by the turn service, carried from
turn 1 to turn 3 across a restart (a new service and a new drawer on the same data folder and database),
dropped when the subject's reference or name changes, deleted with the session. Observed through the shared-
attention context the processors read, never through pixels."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import drawer.mechanisms as mechanisms
from drawer import Drawer
from drawer.mechanisms.anchor_cache import AnchorCache
from drawer.mechanisms.shared_attention import KWARG, SharedAttentionContext
from entrypoints.runtime import build_service
from studio.draw import DrawSettings
from studio.geometry import Box
from studio.images import encode_png
from studio.plan import PlanItem, TurnPlan
from studio.service import TurnService
from studio.settings import Settings
from studio.subjects import Subject
from studio.turns import Session, TurnRequest, TurnStatus
from tests.drawer.conftest import png

H, W = 64, 96
SETTINGS = DrawSettings(
    steps=4, seed=7, refine_step=3, guidance_scale=7.5, mechanisms=["regional", "subject_reference", "shared_attention"]
)


def _plan(subjects: list[str], scale: float = 1.0) -> TurnPlan:
    boxes = {"1": Box(x=0, y=8, w=40 * scale, h=48 * scale), "2": Box(x=56, y=16, w=32, h=40)}
    phrases = {"1": "a girl with a red scarf", "2": "a brown dog"}
    items = [PlanItem(subject_id=s, phrase=phrases[s], box=boxes[s]) for s in subjects]
    return TurnPlan(height=H, width=W, background="a park", items=items)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studio.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def contexts(monkeypatch: pytest.MonkeyPatch) -> list[SharedAttentionContext]:
    seen: list[SharedAttentionContext] = []
    original = mechanisms.ATTENTION_INSTALLERS["shared_attention"]

    def capture(pipe, batch, stack):  # type: ignore[no-untyped-def]
        original(pipe, batch, stack)
        seen.append(stack.kwargs[KWARG])

    monkeypatch.setitem(mechanisms.ATTENTION_INSTALLERS, "shared_attention", capture)
    return seen


class Services:
    """Services on one data folder and database, each with a drawer of its own (as separate processes)."""

    def __init__(self, tiny_drawer: Drawer, data: Path, url: str) -> None:
        self.tiny, self.settings = tiny_drawer, Settings(data_dir=data, database_url=url)
        self.started: list[TurnService] = []

    def start(self) -> tuple[TurnService, Drawer]:
        drawer = Drawer(self.tiny.pipe, self.tiny.preset)  # nothing in memory: a fresh process's drawer
        service = build_service(self.settings, drawer=drawer)
        service.start()
        self.started.append(service)
        return service, drawer

    def close(self) -> None:
        for service in self.started:
            service.close()
            service.db.engine.dispose()


@pytest.fixture
def services(tiny_drawer: Drawer, tmp_path: Path, database_url: str) -> Iterator[Services]:
    built = Services(tiny_drawer, tmp_path / "data", database_url)
    yield built
    built.close()


def run_turn(service: TurnService, session: Session, plan: TurnPlan) -> None:
    turn = service.submit_turn(session, TurnRequest(plan=plan))
    deadline = time.monotonic() + 120
    while not (done := service.db.get_turn(session.id, turn.index)).status.finished:
        assert time.monotonic() < deadline, "turn did not finish"
        time.sleep(0.02)
    assert done.status == TurnStatus.DONE, done.error


def subject(service: TurnService, session: Session, subject_id: str) -> Subject:
    return next(s for s in service.db.list_subjects(session.id) if s.id == subject_id)


def stored_cache(service: TurnService, session: Session, subject_id: str) -> AnchorCache:
    cache_id = subject(service, session, subject_id).anchor_cache_id
    assert cache_id is not None
    return AnchorCache.from_bytes(service.images.get(cache_id))


def _same(a: AnchorCache, b: AnchorCache) -> bool:
    return a.patches.keys() == b.patches.keys() and all(torch.equal(a.patches[k], b.patches[k]) for k in a.patches)


def cache_files(data: Path, service: TurnService, session: Session) -> set[str]:
    ids = {s.anchor_cache_id for s in service.db.list_subjects(session.id)} - {None}
    return {i for i in ids if (data / "images" / i[:2] / f"{i}.png").exists()}  # type: ignore[index]


def test_a_restarted_service_carries_identity_from_turn_1_to_turn_3(
    services: Services, contexts: list[SharedAttentionContext]
) -> None:
    first, first_drawer = services.start()
    session = first.create_session("t", "story", H, W, SETTINGS)
    run_turn(first, session, _plan(["1", "2"]))
    turn1 = stored_cache(first, session, "1")
    assert _same(turn1, contexts[0].recorded["1"]) and stored_cache(first, session, "2").nbytes > 0
    run_turn(first, session, _plan(["2"]))
    assert _same(stored_cache(first, session, "1"), turn1)  # subject 1 was not drawn: its cache stays
    first.close()

    second, second_drawer = services.start()  # a new process: new service, new drawer, same storage
    run_turn(second, session, _plan(["1"], scale=0.5))  # seen smaller: the turn-1 cache stays the best
    third = contexts[-1]
    [(cache, image, box)] = third.setup.cached
    assert _same(cache, turn1) and image == 0 and box == _plan(["1"], scale=0.5).items[0].box
    assert third.cache_reads > 0
    assert _same(stored_cache(second, session, "1"), turn1)
    assert first_drawer.anchors.caches == {} and second_drawer.anchors.caches == {}  # the memory held it


def test_a_changed_reference_or_name_drops_the_cache_and_delete_removes_it(
    services: Services, contexts: list[SharedAttentionContext]
) -> None:
    service, _ = services.start()
    data = services.settings.data_dir
    session = service.create_session("t", "story", H, W, SETTINGS)
    run_turn(service, session, _plan(["1", "2"]))
    old = {s.id: s.anchor_cache_id for s in service.db.list_subjects(session.id)}
    assert cache_files(data, service, session) == set(old.values())
    assert not any(service.db.image_visible_to(i, "t") for i in old.values() if i)  # never served as an image

    from PIL import Image

    service.upload_reference(session, "girl", encode_png(Image.new("RGB", (24, 24), "blue")), subject_id="1")
    assert subject(service, session, "1").anchor_cache_id is None
    assert not (data / "images" / old["1"][:2] / f"{old['1']}.png").exists()  # type: ignore[index]
    run_turn(service, session, _plan(["1"]))
    assert contexts[-1].setup.cached == [] and contexts[-1].cache_reads == 0  # the stale cache never came back
    assert subject(service, session, "1").anchor_cache_id is not None  # recorded anew with the new reference

    same = subject(service, session, "2")
    assert service.rename_subject(session, "2", name=same.name, description=same.description)  # no change
    assert subject(service, session, "2").anchor_cache_id == old["2"]
    service.rename_subject(session, "2", name="cat", description="a grey cat")
    assert subject(service, session, "2").anchor_cache_id is None

    kept = cache_files(data, service, session)
    assert kept
    service.delete_session(session)
    assert not any((data / "images" / i[:2] / f"{i}.png").exists() for i in kept)


def test_a_reference_replaced_by_the_turns_own_crop_keeps_the_turns_cache() -> None:
    from studio.draw import SubjectCrop
    from studio.memory import update_memory
    from studio.storage.images import MemoryImageStore

    images = MemoryImageStore()
    old_cache = images.put(b"old cache")
    before = [Subject(id="1", name="girl", reference_image_id=images.put(png("red")), anchor_cache_id=old_cache)]
    crop = SubjectCrop(subject_id="1", found=True, score=0.9, crop=png("blue"))
    plan = _plan(["1"])
    kept = update_memory(before, plan, {"1": crop}, 2, images)  # "first": the reference stays, so does the cache
    assert kept[0].anchor_cache_id == old_cache
    dropped = update_memory(before, plan, {"1": crop}, 2, images, refresh="better")  # a new reference
    assert dropped[0].anchor_cache_id is None
    new = update_memory(before, plan, {"1": crop}, 2, images, refresh="better", anchor_caches={"1": b"new"})
    assert images.get(new[0].anchor_cache_id) == b"new"  # recorded with the new reference's crop: kept
    better = update_memory(before, plan, {}, 2, images, anchor_caches={"1": b"better"})
    assert images.get(better[0].anchor_cache_id) == b"better"
