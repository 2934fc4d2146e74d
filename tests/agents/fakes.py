"""Test doubles for the agents tests: a pure-Python drawer and turn-context helpers."""

from __future__ import annotations

import threading
import uuid
from typing import Any

from PIL import Image

from studio.draw import DrawJob, DrawResult, DrawSettings, SubjectCrop
from studio.images import encode_png
from studio.protocols import HistoryEntry, StepCallback, TurnContext, TurnOutcome
from studio.subjects import Subject, family_of
from studio.turns import TurnRequest


def png(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A flat PNG."""
    return encode_png(Image.new("RGB", (width, height), color))


class FakeDrawer:
    """Returns a flat PNG of the plan's size and a found crop for every planned subject."""

    def __init__(self, steps: int = 3) -> None:
        self.steps = steps
        self.jobs: list[DrawJob] = []

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        self.jobs.append(job)
        for step in range(self.steps):
            if on_step is not None:
                on_step(step + 1, self.steps)
        plan = job.plan
        shade = (len(self.jobs) * 37) % 256
        crops = {
            item.subject_id: SubjectCrop(
                subject_id=item.subject_id,
                found=True,
                box=item.box,
                score=0.9,
                iou_with_plan=1.0,
                crop=png(32, 32, (shade, int(family_of(item.subject_id)) * 20 % 256, 100)),
            )
            for item in plan.items
        }
        return DrawResult(
            image=png(plan.width, plan.height, (shade, 10, 10)),
            width=plan.width,
            height=plan.height,
            seed=job.settings.seed or 0,
            crops=crops,
            timings={"total": 0.0},
        )


class Session:
    """Drives an engine through turns the way the turn service does: memory and history carried over."""

    def __init__(self, engine: Any, height: int = 768, width: int = 1024, session_id: str | None = None) -> None:
        self.engine = engine
        self.session_id = session_id or uuid.uuid4().hex
        self.height, self.width = height, width
        self.subjects: list[Subject] = []
        self.history: list[HistoryEntry] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.previous_image_id: str | None = None

    def context(self, message: str | None = None, plan: Any = None, turn_id: str | None = None) -> TurnContext:
        return TurnContext(
            session_id=self.session_id,
            turn_id=turn_id or uuid.uuid4().hex,
            turn_index=len(self.history),
            request=TurnRequest(message=message, plan=plan),
            height=self.height,
            width=self.width,
            settings=DrawSettings(steps=4, subject_init_steps=2, seed=1),
            subjects=list(self.subjects),
            history=list(self.history),
            previous_image_id=self.previous_image_id,
        )

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def turn(self, message: str | None = None, plan: Any = None, turn_id: str | None = None) -> TurnOutcome:
        ctx = self.context(message, plan, turn_id)
        outcome = self.engine.run_turn(ctx, self.emit)
        self.accept(ctx, outcome)
        return outcome

    def accept(self, ctx: TurnContext, outcome: TurnOutcome) -> None:
        self.subjects = outcome.subjects
        self.history.append(HistoryEntry(turn_index=ctx.turn_index, message=ctx.request.message, plan=outcome.plan))
