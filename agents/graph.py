"""The conversation graph:

    START ─┬─ message ─► subject_manager ─► layout_generator ─► supervisor ─┬─ approve / bound ─► draw ─► memorize
           │                                     ▲                         │
           │                                     └──────── revise ◄────────┘
           └─ explicit plan ──────────────────────────────────────────────────────────────► draw

Nodes read their collaborators (planner, drawer, image store, event sink) from the run's context and
return plain-JSON updates of ConversationState, so a checkpoint after each node is enough to resume; to the
lists with a reducer (messages, calls, reviews) they return only their new items. The agents' decisions live
beside them: the supervisor's verdict in agents.supervisor.supervise, which the supervisor node only calls
before the graph routes on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Literal

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from agents.analysis import check_analysis, memory_before_draw
from agents.planner import LayoutDraft, LayoutRequest, Planner, ReviewRequest, SubjectRequest
from agents.schemas import SubjectAnalysis
from agents.state import (
    ConversationState,
    draw_record,
    dump_subjects,
    history_of,
    last_plan,
    previous_boxes,
    subjects_of,
)
from agents.supervisor import BestDraft, supervise
from studio.draw import DrawSettings
from studio.plan import TurnPlan
from studio.protocols import Drawer, EmitEvent, ImageStore, StepCallback
from studio.settings import DEFAULT_MAX_SUBJECTS
from studio.turn_steps import build_draw_job, draw_and_memorize

NODES = ("subject_manager", "layout_generator", "supervisor", "draw", "memorize")


def _ignore(*_: Any) -> None:
    return None


@dataclass
class RunContext:
    """What the nodes of one run need besides the state; never checkpointed."""

    planner: Planner
    drawer: Drawer
    images: ImageStore
    max_revisions: int = 3
    max_subjects: int = DEFAULT_MAX_SUBJECTS
    refresh: Literal["first", "better"] = "first"
    emit: EmitEvent = field(default=_ignore)
    on_step: StepCallback | None = None
    cancel: threading.Event | None = None


def _user_message(state: ConversationState) -> str:
    for message in reversed(state.get("messages") or []):
        if message.get("role") == "user" and message.get("turn_index") == state["turn_index"]:
            return str(message["content"])
    raise ValueError("the turn has no user message")


def subject_manager(state: ConversationState, runtime: Runtime[RunContext]) -> ConversationState:
    ctx = runtime.context
    ctx.emit("planning", {"node": "subject_manager"})
    memory = subjects_of(state.get("subjects"))
    history = history_of(state)
    previous = last_plan(history)
    request = SubjectRequest(
        message=_user_message(state),
        turn_index=state["turn_index"],
        memory=memory,
        history=history,
        previous_ids=previous.subject_ids if previous else [],
        previous_background=previous.background if previous else "",
        max_subjects=ctx.max_subjects,
    )
    analysis, calls = ctx.planner.analyze(request)
    check_analysis(analysis, memory, ctx.max_subjects)
    if analysis.background is None and previous is not None:
        analysis = analysis.model_copy(update={"background": previous.background})
    pending = memory_before_draw(memory, analysis, state["turn_index"])
    return {
        "analysis": analysis.model_dump(mode="json"),
        "pending_subjects": dump_subjects(pending),
        "calls": calls,
    }


def layout_generator(state: ConversationState, runtime: Runtime[RunContext]) -> ConversationState:
    ctx = runtime.context
    rounds = state.get("rounds", 0)
    request = LayoutRequest(
        analysis=SubjectAnalysis.model_validate(state["analysis"]),
        memory=subjects_of(state.get("pending_subjects")),
        height=state["height"],
        width=state["width"],
        previous_boxes=previous_boxes(history_of(state), state["height"], state["width"]),
        feedback=state.get("feedback") if rounds else None,
        previous_draft=LayoutDraft.model_validate(state["draft"]) if rounds and state.get("draft") else None,
        round=rounds,
    )
    draft, calls = ctx.planner.layout(request)
    return {"draft": draft.model_dump(mode="json"), "calls": calls}


def supervisor(state: ConversationState, runtime: Runtime[RunContext]) -> ConversationState:
    ctx = runtime.context
    rounds = state.get("rounds", 0)
    request = ReviewRequest(
        analysis=SubjectAnalysis.model_validate(state["analysis"]),
        draft=LayoutDraft.model_validate(state["draft"]),
        memory=subjects_of(state.get("pending_subjects")),
        round=rounds,
    )
    best = BestDraft.model_validate(state["best"]) if state.get("best") else None
    boxes = previous_boxes(history_of(state), state["height"], state["width"])
    verdict = supervise(ctx.planner.review, request, boxes, best, ctx.max_revisions)
    update: ConversationState = {
        "best": verdict.best.model_dump(mode="json"),
        "reviews": [verdict.record()],
        "calls": verdict.calls,
        "feedback": verdict.review.feedback or None,
        "verdict": verdict.decision,
    }
    if verdict.plan is None:
        ctx.emit("revised", {"round": rounds + 1, "feedback": verdict.review.feedback, "source": verdict.review.source})
        return {**update, "rounds": rounds + 1}
    plan = verdict.plan.model_dump(mode="json")
    ctx.emit("planned", {"plan": plan, "rounds": rounds, "hit_revision_bound": verdict.decision == "bound"})
    return {**update, "plan": plan, "hit_revision_bound": verdict.decision == "bound"}


def draw(state: ConversationState, runtime: Runtime[RunContext]) -> ConversationState:
    ctx = runtime.context
    plan = TurnPlan.model_validate(state["plan"])
    if state.get("explicit"):
        ctx.emit("planned", {"plan": state["plan"], "rounds": 0, "hit_revision_bound": False})
    ctx.emit("drawing", {"subjects": plan.subject_ids})
    subjects = subjects_of(state.get("pending_subjects") or state.get("subjects"))
    settings = DrawSettings.model_validate(state["draw_settings"])
    job = build_draw_job(plan, subjects, settings, ctx.images, state.get("previous_image_id"))
    result, memory = draw_and_memorize(
        ctx.drawer,
        job,
        subjects,
        state["turn_index"],
        ctx.images,
        refresh=ctx.refresh,
        on_step=ctx.on_step,
        cancel=ctx.cancel,
    )
    return {"draw": draw_record(result, ctx.images), "drawn_subjects": dump_subjects(memory)}


def memorize(state: ConversationState) -> ConversationState:
    before = {s["id"]: s for s in state.get("subjects") or []}
    after = state.get("drawn_subjects") or []
    changes = {
        "new": [s["id"] for s in after if s["id"] not in before],
        "new_references": [
            s["id"]
            for s in after
            if s.get("reference_image_id")
            and s.get("reference_image_id") != before.get(s["id"], {}).get("reference_image_id")
        ],
        "updated_descriptions": [
            s["id"] for s in after if s["id"] in before and s.get("description") != before[s["id"]].get("description")
        ],
        "leaving": (state.get("analysis") or {}).get("leaving", []),
    }
    plan = state.get("plan") or {}
    summary = f"drew {len(plan.get('items', []))} subject(s): " + ", ".join(
        f"{item['subject_id']}={item['phrase']}" for item in plan.get("items", [])
    )
    message = {"role": "assistant", "content": summary, "turn_index": state["turn_index"]}
    return {"subjects": after, "messages": [message], "memory_changes": changes, "done": True}


def _entry(state: ConversationState) -> str:
    return "draw" if state.get("explicit") else "subject_manager"


def _after_review(state: ConversationState) -> str:
    return "layout_generator" if state.get("verdict") == "revise" else "draw"


def build_graph(checkpointer: BaseCheckpointSaver | None) -> CompiledStateGraph:
    builder = StateGraph(ConversationState, context_schema=RunContext)
    builder.add_node("subject_manager", subject_manager)
    builder.add_node("layout_generator", layout_generator)
    builder.add_node("supervisor", supervisor)
    builder.add_node("draw", draw)
    builder.add_node("memorize", memorize)
    builder.add_conditional_edges(START, _entry, ["subject_manager", "draw"])
    builder.add_edge("subject_manager", "layout_generator")
    builder.add_edge("layout_generator", "supervisor")
    builder.add_conditional_edges("supervisor", _after_review, ["layout_generator", "draw"])
    builder.add_edge("draw", "memorize")
    builder.add_edge("memorize", END)
    return builder.compile(checkpointer=checkpointer)
