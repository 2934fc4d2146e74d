"""The paper-shaped tables: one row per method; aCCS ↑, aFID ↓, aTIS ↑ for the story task, the four accuracies
for the editing task."""

from __future__ import annotations

from collections.abc import Sequence

from evaluation.results import EditingScore, StoryScore, TaskScore


def _cell(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def markdown_table(scores: Sequence[TaskScore]) -> str:
    if not scores:
        return ""
    kinds = {score.task for score in scores}
    if len(kinds) != 1:
        raise ValueError("one table holds one task; got " + ", ".join(sorted(kinds)))
    if isinstance(scores[0], StoryScore):
        lines = ["| Method | aCCS ↑ | aFID ↓ | aTIS ↑ | dialogues |", "|---|---:|---:|---:|---:|"]
        for s in scores:
            assert isinstance(s, StoryScore)
            lines.append(
                f"| {s.method} | {_cell(s.accs)} | {_cell(s.afid, 2)} | {_cell(s.atis, 2)} | {s.dialogues_scored} |"
            )
        note = "aCCS: CLIP cosine (0–1); aFID: Fréchet distance on " + scores[0].settings.fid_features
    else:
        lines = [
            "| Method | Spatial ↑ | Attribute ↑ | Negative ↑ | Numeracy ↑ | dialogues |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in scores:
            assert isinstance(s, EditingScore)
            lines.append(
                f"| {s.method} | {_pct(s.spatial)} | {_pct(s.attribute)} | {_pct(s.negative)} | "
                f"{_pct(s.numeracy)} | {s.dialogues_scored} |"
            )
        note = "accuracies in %"
    quirks = " (official-quirks mode)" if scores[0].settings.official_quirks else ""
    return "\n".join(lines) + f"\n\n{note}{quirks}.\n"
