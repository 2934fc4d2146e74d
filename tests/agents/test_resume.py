"""A process killed mid-turn: the turn resumes from the SQLite checkpoint without re-planning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agents import build_engine
from studio.geometry import Box
from studio.protocols import TurnContext
from studio.storage.images import FileImageStore
from tests.agents.conftest import llm_settings
from tests.agents.fakes import FakeDrawer, Session
from tests.agents.resume_child import KILLED

ROOT = Path(__file__).resolve().parents[2]
OLD_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint_d1dc21f.json"
LAYOUT = {
    "background": "a quiet library",
    "negative": "blurry",
    "items": [
        {"subject_id": "1", "phrase": "sparrow, a tiny sparrow, fluttering", "x": 120, "y": 80, "w": 150, "h": 120},
        {"subject_id": "2", "phrase": "lion, an attentive lion, watching", "x": 500, "y": 300, "w": 420, "h": 420},
    ],
}


def run_child(data_dir: Path, url: str, context_file: Path, node: str) -> int:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "tests.agents.resume_child", str(data_dir), url, str(context_file), node]
    return subprocess.run(command, cwd=ROOT, env=env, timeout=60, check=False).returncode


def test_killed_turn_resumes_after_layout_without_replanning(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    fake.push("layout_generator", LAYOUT)
    engine = build_engine(llm_settings(tmp_path, url), FakeDrawer(), FileImageStore(tmp_path / "images"))
    session = Session(engine, session_id="session-resume")
    ctx = session.context("A tiny sparrow flutters while an attentive lion watches it in a library.")
    context_file = tmp_path / "ctx.json"
    context_file.write_text(ctx.model_dump_json())

    assert run_child(tmp_path, url, context_file, "layout_generator") == KILLED
    assert [fake.count(a) for a in ("subject_manager", "layout_generator", "supervisor")] == [1, 1, 0]
    assert engine.state(ctx.session_id)["draft"] is not None, "the layout was checkpointed before the kill"

    outcome = engine.run_turn(ctx, session.emit)
    assert [fake.count(a) for a in ("subject_manager", "layout_generator", "supervisor")] == [1, 1, 1], outcome.info[
        "reviews"
    ]
    assert outcome.info["resumed"] and outcome.info["llm_calls"] == 3
    assert [kind for kind, _ in session.events] == ["planned", "drawing"], "no node ran twice"
    assert outcome.plan.item("2").box == Box(x=500, y=300, w=420, h=420)
    assert outcome.plan.background == "a quiet library"
    assert [s.id for s in outcome.subjects] == ["1", "2"]

    again = engine.run_turn(ctx, session.emit)
    assert again.plan == outcome.plan and fake.count() == 3, "a finished turn is returned, not redrawn"
    engine.close()


def test_killed_turn_resumes_after_draw_without_redrawing(tmp_path: Path, fake_llm) -> None:
    fake, url = fake_llm
    drawer = FakeDrawer()
    engine = build_engine(llm_settings(tmp_path, url), drawer, FileImageStore(tmp_path / "images"))
    session = Session(engine)
    ctx = session.context("A girl reads a book.")
    context_file = tmp_path / "ctx.json"
    context_file.write_text(ctx.model_dump_json())
    assert run_child(tmp_path, url, context_file, "draw") == KILLED
    outcome = engine.run_turn(ctx, session.emit)
    assert drawer.jobs == [], "the drawing made before the kill is reused from the image store"
    assert outcome.result.image and outcome.subjects[0].reference_image_id
    assert fake.count() == 3
    engine.close()


def test_a_turn_checkpointed_by_the_release_before_the_reducers_resumes(tmp_path: Path, fake_llm) -> None:
    """data/checkpoint_d1dc21f.json is the checkpoint the release at d1dc21f (plain list channels, nodes
    returning whole lists) wrote after the second layout of a turn whose first layout was rejected. The
    graph with reducers resumes it: one supervisor request, and calls, reviews and messages continue the
    stored lists exactly once; the next turn starts them afresh."""
    fake, url = fake_llm
    stored = json.loads(OLD_CHECKPOINT.read_text())
    engine = build_engine(llm_settings(tmp_path, url), FakeDrawer(), FileImageStore(tmp_path / "images"))
    checkpoint = stored["checkpoint"]
    engine.checkpointer.put(stored["config"], checkpoint, stored["metadata"], checkpoint["channel_versions"])
    ctx = TurnContext.model_validate(stored["context"])
    assert engine.graph.get_state({"configurable": {"thread_id": ctx.session_id}}).next == ("supervisor",)

    session = Session(engine, session_id=ctx.session_id)
    outcome = engine.run_turn(ctx, session.emit)
    session.accept(ctx, outcome)
    assert [fake.count(a) for a in ("subject_manager", "layout_generator", "supervisor")] == [0, 0, 1]
    assert outcome.info["resumed"] and outcome.info["rounds"] == 1
    agents = ["subject_manager", "layout_generator", "supervisor", "layout_generator", "supervisor"]
    assert [call["agent"] for call in outcome.info["calls"]] == agents
    assert [(r["round"], r["approve"]) for r in outcome.info["reviews"]] == [(0, False), (1, True)]
    messages = engine.state(ctx.session_id)["messages"]
    assert [(m["role"], m["turn_index"]) for m in messages] == [("user", 0), ("assistant", 0)]
    assert [s.id for s in outcome.subjects] == [m.id for m in session.subjects] and outcome.subjects

    following = session.turn("She smiles.")
    assert [call["agent"] for call in following.info["calls"]] == agents[:3]
    messages = engine.state(ctx.session_id)["messages"]
    assert [(m["role"], m["turn_index"]) for m in messages] == [("user", 0), ("user", 1), ("assistant", 1)]
    engine.close()
