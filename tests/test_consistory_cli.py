"""`studio consistory`: N pictures of one subject in one batch, the first two the anchors, on the tiny preset;
the sharing observed in the shared-attention context the up-block processors read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from drawer.mechanisms.shared_attention import SharedAttentionContext
from entrypoints.cli import app

SETTINGS = ["in a park", "at the beach", "in a library"]


@pytest.fixture
def shared_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[SharedAttentionContext, int, list[int]]]:
    """Every up-block self-attention call: (context, patch count, kept anchor patches per image)."""
    calls: list[tuple[SharedAttentionContext, int, list[int]]] = []
    original_attention = SharedAttentionContext.self_attention

    def self_attention(self, attn, hidden_states, temb):  # type: ignore[no-untyped-def]
        kept = self.kept_index.get(hidden_states.shape[1]) or []
        calls.append((self, hidden_states.shape[1], [int(index.numel()) for index in kept]))
        return original_attention(self, attn, hidden_states, temb)

    monkeypatch.setattr(SharedAttentionContext, "self_attention", self_attention)
    return calls


def run(*args: str) -> object:
    return CliRunner().invoke(app, ["consistory", *args], terminal_width=200)


def test_consistory_draws_the_batch_with_the_first_two_as_anchors(
    tmp_path: Path, shared_calls: list[tuple[SharedAttentionContext, int, list[int]]]
) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "out"
    args = ["--subject", "a girl with a red scarf", "--size", "64", "--steps", "3", "--seed", "5", "--out", str(out)]
    for setting in SETTINGS:
        args += ["--settings", setting]
    result = run(*args, "--mask-dropout", "0")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["anchors"] == [0, 1] and [i["anchor"] for i in summary["images"]] == [True, True, False]
    assert [i["prompt"] for i in summary["images"]] == [f"a girl with a red scarf {s}" for s in SETTINGS]
    assert [i["seed"] for i in summary["images"]] == [5, 6, 7]
    assert sorted(p.name for p in out.glob("*.png")) == ["image-00.png", "image-01.png", "image-02.png"]

    [context] = {id(c): c for c, _, _ in shared_calls}.values()  # one render: the whole batch at once
    assert context.images == 3 and context.setup.anchors == [0, 1]
    assert [tokens["1"] for tokens in context.setup.subject_tokens] == [i["subject_tokens"] for i in summary["images"]]
    assert all(i["subject_tokens"] for i in summary["images"])
    # from step 1 on, the anchors' subject patches are gathered as extra keys of every other picture
    shared = [kept for _, _, kept in shared_calls if kept]
    assert shared and all(kept[0] > 0 and kept[1] > 0 for kept in shared)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--settings", "in a park"], "give at least 2 settings"),
        (["--settings", "a", "--settings", "b", "--size", "60"], "height 60 must be at least 64"),
        (["--settings", "a", "--settings", "b", "--size", "64x"], "give N (square) or WIDTHxHEIGHT"),
        (["--settings", "a", "--settings", "b", "--steps", "0"], "--steps"),
        (["--settings", "a", "--settings", "b", "--mask-dropout", "1.5"], "--mask-dropout"),
        (["--settings", "a", "--settings", "b", "--preset", "nope"], "unknown model preset 'nope'"),
    ],
)
def test_consistory_refuses_bad_options_in_one_line(args: list[str], message: str) -> None:
    result = run("--subject", "a girl", *args)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
