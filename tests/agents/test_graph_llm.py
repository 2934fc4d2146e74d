"""The whole graph with the real openai client against the scripted server."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents import build_engine
from agents.errors import AgentOutputError, LLMCallError
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from studio.storage.images import FileImageStore
from tests.agents.conftest import llm_settings
from tests.agents.fake_openai import CONTEXT_OVERFLOW, Reply
from tests.agents.fakes import FakeDrawer, Session

MESSAGE = "A girl and a boy play in the park."


def layout(*boxes: tuple[str, float, float, float, float]) -> dict:
    items = [{"subject_id": s, "phrase": f"subject {s}", "x": x, "y": y, "w": w, "h": h} for s, x, y, w, h in boxes]
    return {"background": "a park", "negative": "blurry", "items": items}


def engine_for(tmp_path: Path, url: str, **llm: object):
    settings = llm_settings(tmp_path, url, **llm)
    return build_engine(settings, FakeDrawer(), FileImageStore(tmp_path / "images"))


def test_turn_records_calls_usage_and_prompt_versions(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    session = Session(engine_for(tmp_path, url))
    outcome = session.turn(MESSAGE)
    assert [s.id for s in outcome.subjects] == ["1", "2"]
    assert [kind for kind, _ in session.events] == ["planning", "planned", "drawing"]
    info = outcome.info
    assert info["planner"] == "llm" and info["llm_calls"] == 3
    assert info["token_usage"] == {"prompt_tokens": 300, "completion_tokens": 60, "total_tokens": 360}
    assert set(info["prompt_versions"]) == {"subject_manager", "layout_generator", "supervisor"}
    assert all(v.startswith("1+") for v in info["prompt_versions"].values())
    assert len(info["latency_s"]) == 3 and info["rounds"] == 0 and not info["hit_revision_bound"]
    assert [fake.count(a) for a in ("subject_manager", "layout_generator", "supervisor")] == [1, 1, 1]


def test_supervisor_feedback_reaches_the_layout_generator(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    fake.push("supervisor", {"approve": False, "feedback": "move subject 2 a little higher"})
    session = Session(engine_for(tmp_path, url))
    outcome = session.turn(MESSAGE)
    revised = [data for kind, data in session.events if kind == "revised"]
    assert revised == [{"round": 1, "feedback": "move subject 2 a little higher", "source": "llm"}]
    second_layout = [r for r in fake.requests if r["agent"] == "layout_generator"][1]
    assert "move subject 2 a little higher" in second_layout["body"]["messages"][-1]["content"]
    assert outcome.info["rounds"] == 1 and not outcome.info["hit_revision_bound"]


def test_deterministic_checks_then_bound_draws_the_best_plan(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    overlapping = layout(("1", 100, 100, 300, 600), ("2", 110, 110, 290, 590))
    good = layout(("1", 100, 100, 300, 600), ("2", 600, 100, 300, 600))
    outside = layout(("1", 100, 100, 300, 600), ("2", 900, 100, 300, 600))
    fake.push("layout_generator", overlapping, good, outside)
    fake.push("supervisor", {"approve": False, "feedback": "subject 1 should look at subject 2"})
    session = Session(engine_for(tmp_path, url, max_revisions=2))
    outcome = session.turn(MESSAGE)
    assert fake.count("layout_generator") == 3
    assert fake.count("supervisor") == 1, "layouts failing the deterministic checks never reach the LLM"
    assert outcome.info["hit_revision_bound"] and outcome.info["rounds"] == 2
    assert outcome.plan.item("2").box == Box(x=600, y=100, w=300, h=600)
    reviews = outcome.info["reviews"]
    assert "almost fully overlap" in reviews[0]["feedback"] and reviews[0]["source"] == "checks"
    assert "outside" in reviews[2]["feedback"]
    assert [kind for kind, _ in session.events].count("revised") == 2


WRONG_ID = {
    "caption": "a girl",
    "subjects": [
        {"id": "7", "status": "new", "name": "girl", "description": "a girl", "parent_id": None, "action": ""}
    ],
    "updates": [],
    "leaving": [],
    "background": None,
    "background_only": False,
    "relations": [],
}


def test_invalid_replies_fail_the_turn_cleanly_and_the_turn_can_be_retried(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    fake.push("subject_manager", WRONG_ID, WRONG_ID)
    session = Session(engine_for(tmp_path, url, fallback_to_offline=False))
    ctx = session.context(MESSAGE)
    with pytest.raises(AgentOutputError, match=r"^subject_manager: .*next free id '1', got '7'") as failure:
        session.engine.run_turn(ctx, session.emit)
    assert failure.value.reason.startswith("planning failed: subject_manager: invalid reply after one repair round")
    info = failure.value.info
    assert info["llm_calls"] == 2 and info["token_usage"]["total_tokens"] == 240 and len(info["latency_s"]) == 2
    assert [c["repair"] for c in info["calls"]] == [False, True] and all(c["error"] for c in info["calls"])
    outcome = session.engine.run_turn(ctx, session.emit)
    assert [s.id for s in outcome.subjects] == ["1", "2"] and outcome.info["resumed"]


def test_failed_layout_keeps_the_earlier_calls_in_the_failure_info(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    fake.push("layout_generator", "not json", Reply(status=400, error=CONTEXT_OVERFLOW))
    session = Session(engine_for(tmp_path, url, fallback_to_offline=False))
    with pytest.raises(LLMCallError, match="does not fit the model's context") as failure:
        session.turn(MESSAGE)
    calls = failure.value.info["calls"]
    assert [(c["agent"], c["repair"]) for c in calls] == [
        ("subject_manager", False),
        ("layout_generator", False),
        ("layout_generator", True),
    ]


def test_offline_fallback_when_the_llm_cannot_plan(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    fake.push("subject_manager", WRONG_ID, WRONG_ID)
    session = Session(engine_for(tmp_path, url))
    outcome = session.turn(MESSAGE)
    assert [s.id for s in outcome.subjects] == ["1", "2"] and outcome.plan.subject_ids == ["1", "2"]
    fallback = outcome.info["fallback"]
    assert fallback["planner"] == "offline" and fallback["agent"] == "subject_manager"
    assert fallback["reason"].startswith("planning failed: subject_manager: invalid reply after one repair round")
    assert outcome.info["llm_calls"] == 2 and outcome.info["token_usage"]["total_tokens"] == 240
    assert fake.count() == 2, "the rest of the turn is planned offline"
    planned = [data for kind, data in session.events if kind == "planned"]
    assert len(planned) == 1 and planned[0]["fallback"] == fallback


def test_offline_fallback_keeps_what_the_llm_agents_produced(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    analysis = {**WRONG_ID, "caption": "a girl reads", "subjects": [{**WRONG_ID["subjects"][0], "id": "1"}]}
    fake.push("subject_manager", analysis)
    fake.push("layout_generator", "not json", "still not json")
    session = Session(engine_for(tmp_path, url))
    outcome = session.turn(MESSAGE)
    assert outcome.plan.caption == "a girl reads" and outcome.plan.subject_ids == ["1"]
    assert outcome.info["fallback"]["agent"] == "layout_generator" and outcome.info["llm_calls"] == 3
    assert fake.count("supervisor") == 0


def test_explicit_plan_turn_skips_the_agents(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    plan = TurnPlan(
        height=512,
        width=512,
        caption="a cat",
        background="a room",
        items=[PlanItem(subject_id="1", phrase="cat, sleeping", box=Box(x=100, y=200, w=200, h=150))],
    )
    session = Session(engine_for(tmp_path, url))
    outcome = session.turn(plan=plan)
    assert fake.count() == 0
    assert outcome.plan == plan and outcome.info["planner"] == "explicit" and outcome.info["llm_calls"] == 0
    assert [s.name for s in outcome.subjects] == ["cat"] and outcome.subjects[0].reference_image_id
    assert [kind for kind, _ in session.events] == ["planned", "drawing"]


def test_engine_protocol_steps_and_cancel(offline_engine) -> None:
    import threading

    from studio.failures import DrawCancelled
    from studio.protocols import TurnEngine

    assert isinstance(offline_engine, TurnEngine)
    session = Session(offline_engine)
    steps: list[tuple[int, int]] = []
    ctx = session.context("A robot waters a tree.")
    outcome = offline_engine.run_turn(ctx, session.emit, on_step=lambda step, total: steps.append((step, total)))
    assert steps == [(1, 3), (2, 3), (3, 3)] and outcome.plan.subject_ids == ["1", "2"]

    class CancellingDrawer:
        def draw(self, job, on_step=None, cancel: threading.Event | None = None):
            assert cancel is not None and cancel.is_set()
            raise DrawCancelled("cancelled")

    offline_engine.drawer = CancellingDrawer()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DrawCancelled):
        offline_engine.run_turn(session.context("A cat sleeps."), session.emit, cancel=cancel)
