"""GraphEngine: the TurnEngine that runs one turn through the checkpointed conversation graph."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver

from agents.errors import AgentError
from agents.graph import RunContext, build_graph
from agents.planner import Planner
from agents.state import ConversationState, draw_result, fresh_turn_input, subjects_of
from studio.plan import TurnPlan
from studio.protocols import Drawer, EmitEvent, ImageStore, StepCallback, TurnContext, TurnOutcome
from studio.settings import DEFAULT_MAX_SUBJECTS, Settings

log = logging.getLogger(__name__)


def _initial_state(ctx: TurnContext, planner: Planner) -> ConversationState:
    messages = [
        {"role": "user", "content": entry.message, "turn_index": entry.turn_index}
        for entry in ctx.history
        if entry.message
    ]
    explicit = ctx.request.plan is not None
    if ctx.request.message is not None:
        messages.append({"role": "user", "content": ctx.request.message, "turn_index": ctx.turn_index})
    settings = ctx.request.settings or ctx.settings
    return {
        "session_id": ctx.session_id,
        "turn_id": ctx.turn_id,
        "turn_index": ctx.turn_index,
        "height": ctx.height,
        "width": ctx.width,
        "messages": messages,
        "history": [entry.model_dump(mode="json") for entry in ctx.history],
        "subjects": [subject.model_dump(mode="json") for subject in ctx.subjects],
        "pending_subjects": [],
        "drawn_subjects": [],
        "explicit": explicit,
        "analysis": None,
        "draft": None,
        "plan": ctx.request.plan.model_dump(mode="json") if ctx.request.plan is not None else None,
        "feedback": None,
        "verdict": None,
        "rounds": 0,
        "best": None,
        "reviews": [],
        "hit_revision_bound": False,
        "draw_settings": settings.model_dump(mode="json"),
        "previous_image_id": ctx.previous_image_id,
        "draw": None,
        "calls": [],
        "prompt_versions": {} if explicit else planner.prompt_versions(),
        "planner": "explicit" if explicit else planner.kind,
        "memory_changes": {},
        "done": False,
    }


def turn_info(state: ConversationState, resumed: bool, failed_calls: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """What the turn did; `failed_calls` are the requests of an agent exchange that failed (never checkpointed)."""
    calls = [*(state.get("calls") or []), *failed_calls]
    usage = {
        key: sum(int(call.get(key) or 0) for call in calls)
        for key in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    return {
        "planner": state.get("planner"),
        "llm_calls": len(calls),
        "token_usage": usage,
        "calls": calls,
        "latency_s": [call.get("latency_s") for call in calls],
        "prompt_versions": state.get("prompt_versions") or {},
        "rounds": state.get("rounds", 0),
        "hit_revision_bound": bool(state.get("hit_revision_bound")),
        "reviews": state.get("reviews") or [],
        "analysis": state.get("analysis"),
        "memory_changes": state.get("memory_changes") or {},
        "resumed": resumed,
    }


class GraphEngine:
    """Runs turns through the LangGraph conversation graph; thread_id = session id.

    A call with the turn id of the thread's unfinished turn resumes it from its last checkpoint (no node
    that already finished runs again); a call with the id of a finished turn returns its outcome without
    redrawing; any other turn id starts a fresh turn whose memory comes from the TurnContext."""

    def __init__(
        self,
        planner: Planner,
        drawer: Drawer,
        images: ImageStore,
        checkpointer: BaseCheckpointSaver,
        max_revisions: int = 3,
        max_subjects: int = DEFAULT_MAX_SUBJECTS,
        refresh: str = "first",
        close: Callable[[], None] | None = None,
        on_node: Callable[[str], None] | None = None,
        fallback: Planner | None = None,
    ) -> None:
        self.planner = planner
        self.fallback = fallback
        """Plans the rest of a turn whose LLM agent failed (settings.llm.fallback_to_offline); None: the turn fails."""
        self.drawer = drawer
        self.images = images
        self.checkpointer = checkpointer
        # The offline layout is deterministic: asking it again would return the same boxes, so its turns
        # draw at once (recording any issue and hit_revision_bound) instead of looping to the bound.
        self.max_revisions = 0 if planner.kind == "offline" else max_revisions
        self.max_subjects = max_subjects
        self.refresh = refresh
        self.on_node = on_node
        self._close = close
        self.graph = build_graph(checkpointer)

    def state(self, session_id: str) -> ConversationState:
        """The latest checkpointed state of a session (empty when none)."""
        return self.graph.get_state({"configurable": {"thread_id": session_id}}).values  # type: ignore[return-value]

    def run_turn(
        self,
        ctx: TurnContext,
        emit: EmitEvent,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnOutcome:
        config = {"configurable": {"thread_id": ctx.session_id}}
        snapshot = self.graph.get_state(config)  # type: ignore[arg-type]
        values: ConversationState = snapshot.values or {}  # type: ignore[assignment]
        same_turn = values.get("turn_id") == ctx.turn_id
        if same_turn and values.get("done") and not snapshot.next:
            return self._outcome(values, resumed=True)
        resumed = same_turn and bool(snapshot.next)
        run_input = None if resumed else fresh_turn_input(_initial_state(ctx, self.planner))
        run_context = RunContext(
            planner=self.planner,
            drawer=self.drawer,
            images=self.images,
            max_revisions=self.max_revisions,
            max_subjects=self.max_subjects,
            refresh="better" if self.refresh == "better" else "first",
            emit=emit,
            on_step=on_step,
            cancel=cancel,
        )
        try:
            final = self._stream(run_input, config, run_context, values)
        except AgentError as exc:
            if self.fallback is None:
                exc.info = turn_info(self.graph.get_state(config).values, resumed, exc.calls)  # type: ignore[arg-type]
                raise
            return self._fall_back(exc, config, run_context, resumed)
        return self._outcome(final, resumed=resumed)

    def _stream(
        self, run_input: ConversationState | None, config: Any, context: RunContext, values: ConversationState
    ) -> ConversationState:
        final = values
        for mode, chunk in self.graph.stream(
            run_input, config, context=context, stream_mode=["updates", "values"], durability="sync"
        ):
            if mode == "values":
                final = chunk  # type: ignore[assignment]
            elif self.on_node is not None:
                for node in chunk:  # type: ignore[union-attr]
                    self.on_node(node)
        return final

    def forget(self, session_id: str) -> None:
        """Delete the checkpoints of the session's thread (the session was deleted)."""
        self.checkpointer.delete_thread(session_id)

    def branch(self, parent_session_id: str, turn_index: int, child_session_id: str) -> bool:
        """Checkpoint time travel: copy the parent thread's checkpoint at the end of turn `turn_index` (the
        newest one whose state is that turn, done, with nothing left to run) into the child's thread, as the
        child thread's first checkpoint. The child's next turn continues from it like any next turn."""
        parent = {"configurable": {"thread_id": parent_session_id}}
        for snapshot in self.graph.get_state_history(parent):  # type: ignore[arg-type]
            values = snapshot.values or {}
            if values.get("turn_index") == turn_index and values.get("done") and not snapshot.next:
                break
        else:
            log.warning("no checkpoint of turn %s in thread %s to branch from", turn_index, parent_session_id)
            return False
        found = self.checkpointer.get_tuple(snapshot.config)
        if found is None:
            return False
        # every channel's value is written, so the copy stands alone (no blob of the parent thread is shared)
        self.checkpointer.put(
            {"configurable": {"thread_id": child_session_id, "checkpoint_ns": ""}},
            found.checkpoint,
            found.metadata,
            found.checkpoint["channel_versions"],
        )
        return True

    def _fall_back(self, exc: AgentError, config: Any, context: RunContext, resumed: bool) -> TurnOutcome:
        """Plan the rest of the turn with the fallback planner, from the checkpoint before the failed node
        (what the LLM agents already produced stays); the `planned` event and the info say so."""
        assert self.fallback is not None
        note = {"planner": self.fallback.kind, "agent": exc.agent, "reason": exc.reason}
        log.info("LLM planning failed, falling back to the %s planner: %s", self.fallback.kind, exc.reason)
        emit = context.emit

        def noted(event_type: Any, data: dict[str, Any]) -> None:
            emit(event_type, {**data, "fallback": note} if event_type == "planned" else data)

        # the fallback layout is deterministic: never loop for revisions (as for an offline engine)
        fallback_context = replace(context, planner=self.fallback, max_revisions=0, emit=noted)
        final = self._stream(None, config, fallback_context, self.graph.get_state(config).values)  # type: ignore[arg-type]
        return self._outcome(final, resumed=resumed, failed_calls=exc.calls, fallback=note)

    def _outcome(
        self,
        state: ConversationState,
        resumed: bool,
        failed_calls: Sequence[dict[str, Any]] = (),
        fallback: dict[str, Any] | None = None,
    ) -> TurnOutcome:
        if not state.get("done") or state.get("draw") is None:
            raise RuntimeError(f"turn {state.get('turn_id')!r} stopped before it was drawn")
        return TurnOutcome(
            plan=TurnPlan.model_validate(state["plan"]),
            result=draw_result(state["draw"], self.images),  # type: ignore[arg-type]
            subjects=subjects_of(state.get("subjects")),
            info=turn_info(state, resumed, failed_calls) | ({"fallback": fallback} if fallback else {}),
        )

    def close(self) -> None:
        """Close the checkpointer this engine opened and the planner's HTTP client."""
        if self._close is not None:
            self._close()
            self._close = None
        closer = getattr(self.planner, "close", None)
        if callable(closer):
            closer()

    def __enter__(self) -> GraphEngine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def make_planner(settings: Settings) -> Planner:
    if settings.llm.base_url is None:
        from agents.offline import OfflinePlanner

        return OfflinePlanner()
    from agents.llm_planner import LLMPlanner

    return LLMPlanner(settings.llm)


def build_engine(
    settings: Settings,
    drawer: Drawer,
    images: ImageStore,
    checkpointer: BaseCheckpointSaver | None = None,
    planner: Planner | None = None,
) -> GraphEngine:
    """The engine for these settings: the LLM agents when settings.llm.base_url is set, else the offline
    planner; SQLite checkpoints in <data_dir>/checkpoints.sqlite unless the database URL is postgresql
    (or a checkpointer is given, which the caller then owns)."""
    from agents.checkpoint import open_checkpointer
    from agents.offline import OfflinePlanner

    close = None
    if checkpointer is None:
        checkpointer, close = open_checkpointer(settings)
    planner = planner or make_planner(settings)
    fallback = OfflinePlanner() if planner.kind == "llm" and settings.llm.fallback_to_offline else None
    return GraphEngine(
        planner=planner,
        drawer=drawer,
        images=images,
        checkpointer=checkpointer,
        max_revisions=settings.llm.max_revisions,
        max_subjects=settings.max_subjects,
        refresh=settings.vision.refresh,
        close=close,
        fallback=fallback,
    )
