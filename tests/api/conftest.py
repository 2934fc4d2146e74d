"""A service with a scripted engine: the API's own mechanisms (auth, ordering, idempotency, uploads,
events) are tested without models; the real models are exercised in tests/test_end_to_end.py."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from studio.failures import DrawCancelled, PlanError
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.protocols import EmitEvent, StepCallback, TurnContext, TurnOutcome
from studio.service import TurnService
from studio.settings import Settings
from studio.storage.database import Database
from studio.storage.images import FileImageStore
from studio.story_runner import StoryRunner
from studio.turn_steps import build_draw_job, draw_and_memorize
from tests.agents.fakes import FakeDrawer, png

__all__ = ["FakeDrawer", "ScriptedEngine", "make_service", "png", "png_bomb", "wait_for_turn"]


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge canvas."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


class ScriptedEngine:
    """Message turns get a one-subject plan; "fail" in a message fails the turn; `hold` pauses a turn."""

    def __init__(self, images: FileImageStore) -> None:
        self.images = images
        self.drawer = FakeDrawer()
        self.started: list[tuple[str, int, float]] = []
        self.finished: list[tuple[str, int, float]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.forgotten: list[str] = []
        self.branched: list[tuple[str, int, str]] = []

    def run_turn(
        self,
        ctx: TurnContext,
        emit: EmitEvent,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnOutcome:
        self.started.append((ctx.session_id, ctx.turn_index, time.monotonic()))
        # held like a long draw: checks its cancel between "steps", as a drawer does
        deadline = time.monotonic() + 10
        while not self.hold.wait(0.005) and time.monotonic() < deadline:
            if cancel is not None and cancel.is_set():
                raise DrawCancelled
        if cancel is not None and cancel.is_set():
            raise DrawCancelled
        if ctx.request.plan is not None:
            plan = ctx.request.plan
        else:
            emit("planning", {})
            if "fail" in (ctx.request.message or ""):
                raise PlanError("scripted planner failure")
            plan = TurnPlan(
                height=ctx.height,
                width=ctx.width,
                caption=ctx.request.message or "",
                items=[PlanItem(subject_id="1", phrase="a girl", box=Box(x=8, y=8, w=32, h=32))],
            )
            emit("planned", {"plan": plan.model_dump(mode="json")})
        emit("drawing", {})
        job = build_draw_job(plan, ctx.subjects, ctx.settings, self.images)
        result, memory = draw_and_memorize(self.drawer, job, ctx.subjects, ctx.turn_index, self.images, on_step=on_step)
        self.finished.append((ctx.session_id, ctx.turn_index, time.monotonic()))
        return TurnOutcome(plan=plan, result=result, subjects=memory)

    def forget(self, session_id: str) -> None:
        self.forgotten.append(session_id)

    def branch(self, parent_session_id: str, turn_index: int, child_session_id: str) -> bool:
        self.branched.append((parent_session_id, turn_index, child_session_id))
        return True


def make_service(
    tmp_path: Path, cancel_poll_seconds: float = 0.0, **overrides: object
) -> tuple[TurnService, ScriptedEngine]:
    settings = Settings(**{"data_dir": tmp_path, "worker_threads": 4, **overrides})
    db = Database(settings.resolved_database_url)
    db.migrate()
    images = FileImageStore(tmp_path / "images")
    engine = ScriptedEngine(images)
    service = TurnService(settings, db, images, engine, cancel_poll_seconds=cancel_poll_seconds)
    service.stories = StoryRunner(service, engine.drawer)
    return service, engine


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[TurnService, ScriptedEngine]]:
    service, engine = make_service(tmp_path, max_upload_bytes=200_000, max_upload_pixels=1_000_000)
    yield service, engine
    engine.hold.set()


@pytest.fixture
def client(service: tuple[TurnService, ScriptedEngine]) -> Iterator[TestClient]:
    with TestClient(create_app(service[0])) as test_client:
        yield test_client


@pytest.fixture
def keys(service: tuple[TurnService, ScriptedEngine]) -> dict[str, dict[str, str]]:
    db = service[0].db
    return {
        "a": {"Authorization": f"Bearer {db.create_key('tenant-a')}"},
        "b": {"Authorization": f"Bearer {db.create_key('tenant-b')}"},
    }


def wait_for_turn(
    client: TestClient, headers: dict[str, str], session_id: str, index: int, timeout: float = 20
) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        turn = client.get(f"/v1/sessions/{session_id}/turns/{index}", headers=headers).json()
        if turn["status"] in ("done", "failed"):
            return turn
        time.sleep(0.02)
    raise AssertionError(f"turn {index} did not finish")
