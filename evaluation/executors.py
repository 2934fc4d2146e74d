"""How one benchmark turn is drawn: straight from the file's plan (the service's explicit-plan path), or by
handing the caption to the agents' TurnEngine as a chat message. Both end in the shared turn steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from studio.draw import DrawResult, DrawSettings
from studio.plan import TurnPlan
from studio.protocols import Drawer, HistoryEntry, ImageStore, StepCallback, TurnContext, TurnEngine
from studio.subjects import Subject
from studio.turn_steps import build_draw_job, draw_and_memorize
from studio.turns import TurnRequest
from workers.scope import job_scope


@dataclass
class TurnInput:
    dialogue: str
    turn: int
    plan: TurnPlan
    settings: DrawSettings
    memory: list[Subject]
    previous_image_id: str | None
    history: list[HistoryEntry] = field(default_factory=list)


@dataclass
class TurnOutput:
    plan: TurnPlan
    result: DrawResult
    memory: list[Subject]
    references: list[str]
    info: dict[str, Any] = field(default_factory=dict)


def turn_scope(turn: TurnInput) -> str:
    """The job scope of a benchmark turn: a run restarted while the drawer pool drew the turn reads the
    stored picture back instead of drawing it again (see workers/scope.py)."""
    return f"bench:{turn.dialogue}:turn{turn.turn}"


class TurnExecutor(Protocol):
    def __call__(self, turn: TurnInput, on_step: StepCallback | None = None) -> TurnOutput: ...


@dataclass
class PlanExecutor:
    """The file's plan is drawn as an explicit-plan turn: build_draw_job + draw_and_memorize, exactly the
    service's path for `{plan: ...}` turns. The drawer carries its own SubjectLocator."""

    drawer: Drawer
    images: ImageStore
    refresh: Literal["first", "better"] = "first"

    def __call__(self, turn: TurnInput, on_step: StepCallback | None = None) -> TurnOutput:
        job = build_draw_job(turn.plan, turn.memory, turn.settings, self.images, turn.previous_image_id)
        with job_scope(turn_scope(turn)):
            result, memory = draw_and_memorize(
                self.drawer, job, turn.memory, turn.turn, self.images, refresh=self.refresh, on_step=on_step
            )
        return TurnOutput(plan=job.plan, result=result, memory=memory, references=sorted(job.references))


@dataclass
class AgentExecutor:
    """The turn's caption goes to the agents as a chat message; they plan, draw and memorize."""

    engine: TurnEngine
    images: ImageStore
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __call__(self, turn: TurnInput, on_step: StepCallback | None = None) -> TurnOutput:
        message = turn.plan.caption or turn.plan.global_prompt()
        ctx = TurnContext(
            session_id=f"bench:{turn.dialogue}",
            turn_id=f"bench:{turn.dialogue}:turn{turn.turn}",
            turn_index=turn.turn,
            request=TurnRequest(message=message),
            height=turn.plan.height,
            width=turn.plan.width,
            settings=turn.settings,
            subjects=turn.memory,
            history=turn.history,
            previous_image_id=turn.previous_image_id,
        )
        with job_scope(turn_scope(turn)):
            outcome = self.engine.run_turn(ctx, emit=lambda kind, data: None, on_step=on_step)
        had_reference = {s.id for s in turn.memory if s.reference_image_id is not None}
        references = sorted(had_reference & set(outcome.plan.subject_ids))
        info = dict(outcome.info)
        info["message"] = message
        return TurnOutput(
            plan=outcome.plan, result=outcome.result, memory=outcome.subjects, references=references, info=info
        )
