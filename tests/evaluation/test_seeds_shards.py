from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evaluation.canvas import fit_plan
from evaluation.runner import RunOptions, run_benchmark
from evaluation.seeds import parse_shard, shard_items, stable_seed
from studio.draw import DrawSettings
from studio.geometry import Box
from studio.plan import PlanItem, TurnPlan
from tests.evaluation.fakes import FakeDrawer


def test_seed_is_stable_across_processes() -> None:
    code = "from evaluation.seeds import stable_seed; print(stable_seed('dialogue 7', 3, 5))"
    root = Path(__file__).resolve().parents[2]
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
            env={"PYTHONHASHSEED": salt, "PATH": ""},
        ).stdout.strip()
        for salt in ("1", "2")
    }
    assert outputs == {str(stable_seed("dialogue 7", 3, 5))}


def test_seed_depends_on_dialogue_turn_and_base() -> None:
    seeds = {stable_seed(d, t, b) for d in ("dialogue 1", "dialogue 2") for t in (1, 2, 3) for b in (0, 1)}
    assert len(seeds) == 12 and all(0 <= s < 2**31 for s in seeds)


def test_shards_partition_the_dialogues() -> None:
    items = [f"dialogue {i}" for i in range(1, 11)]
    shards = [shard_items(items, i, 3) for i in (1, 2, 3)]
    assert sorted(name for shard in shards for name in shard) == sorted(items)
    assert [len(s) for s in shards] == [4, 3, 3]
    assert shard_items(items, 2, 3) == shards[1]
    assert parse_shard(" 2/3 ") == (2, 3)
    for bad in ("0/3", "4/3", "1-3", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_sharded_runs_cover_the_file(tmp_path: Path, demo_file: Path) -> None:
    settings = DrawSettings(steps=1, subject_init=False, subject_init_steps=0)
    names = []
    for index in (1, 2):
        summary = run_benchmark(
            demo_file,
            tmp_path,
            drawer=FakeDrawer(),
            settings=settings,
            options=RunOptions(shard=(index, 2), limit_turns=1, max_side=64, progress=False),
        )
        names.append(summary.dialogues)
    assert names == [["dialogue 1", "dialogue 3", "dialogue 5"], ["dialogue 2", "dialogue 4"]]
    assert len(list(tmp_path.glob("*/turn1.png"))) == 5


def test_fit_plan_keeps_aspect_and_boxes() -> None:
    plan = TurnPlan(
        height=1024, width=920, items=[PlanItem(subject_id="1", phrase="girl", box=Box(x=460, y=512, w=92, h=100))]
    )
    small = fit_plan(plan, 128)
    assert (small.height, small.width) == (128, 112)
    box = small.items[0].box
    assert box.x == pytest.approx(460 * 112 / 920) and box.y == pytest.approx(64)
    assert fit_plan(plan, 2048) is plan
