"""The offline planner on every caption of the CMIGBench samples: valid plans for every turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.analysis import check_analysis, memory_before_draw
from agents.checks import check_layout
from agents.offline import OfflinePlanner
from agents.planner import LayoutRequest, SubjectRequest
from agents.state import last_plan, previous_boxes
from studio.plan import TurnPlan, load_dialogues
from studio.protocols import HistoryEntry
from studio.subjects import Subject

DATA = Path("/work/shared/data/cmigbench")
FILES = sorted(DATA.glob("*.json")) if DATA.is_dir() else []


def message_of(raw_turn: dict) -> str:
    """The caption, or for the turns that have none the objects' phrases (what a user would have typed)."""
    return raw_turn.get("caption") or "; ".join(obj[0] for obj in raw_turn["objects"])


@pytest.mark.skipif(not FILES, reason=f"CMIGBench samples not found in {DATA}")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_turn_gets_a_valid_plan(path: Path) -> None:
    planner = OfflinePlanner()
    raw = json.loads(path.read_text())
    dialogues = load_dialogues(raw)
    turns = 0
    for dialogue in dialogues:
        memory: list[Subject] = []
        history: list[HistoryEntry] = []
        for index, (key, reference) in enumerate(zip(dialogue.turn_keys, dialogue.turns, strict=True)):
            message = message_of(raw[dialogue.name][key])
            previous = last_plan(history)
            analysis, calls = planner.analyze(
                SubjectRequest(
                    message=message,
                    turn_index=index,
                    memory=memory,
                    history=history,
                    previous_ids=previous.subject_ids if previous else [],
                )
            )
            check_analysis(analysis, memory)
            memory = memory_before_draw(memory, analysis, index)
            height, width = reference.height, reference.width
            boxes = previous_boxes(history, height, width)
            draft, _ = planner.layout(
                LayoutRequest(analysis=analysis, memory=memory, height=height, width=width, previous_boxes=boxes)
            )
            plan = TurnPlan.model_validate(draft.plan.model_dump())
            assert (plan.height, plan.width) == (height, width)
            assert calls == []
            assert plan.subject_ids == [m.id for m in analysis.subjects]
            assert all(i.box.x >= 0 and i.box.x + i.box.w <= width + 1e-6 for i in plan.items)
            issues = check_layout(draft, analysis, {})
            assert not issues, (message, issues)
            if message.strip():
                assert plan.items or analysis.background_only or not memory, message
            history.append(HistoryEntry(turn_index=index, message=message, plan=plan))
            turns += 1
    assert turns == sum(len(d.turns) for d in dialogues)
