"""Scoring a run folder: detection on every turn picture, then the story or editing metrics per dialogue and the
averages, written as JSON and as a Markdown table."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.layout import DialogueLayout, RunLayout
from evaluation.metrics import editing as ed
from evaluation.metrics.clip import TIS_SCALE, ClipScorer
from evaluation.metrics.detection import LocatorPool
from evaluation.metrics.fid import FeatureExtractor
from evaluation.metrics.story import TurnCrops, ccs, consistency_pairs, dialogue_fid, dialogue_tis, tis_prompt
from evaluation.records import RunManifest, Task
from evaluation.report import markdown_table
from evaluation.results import (
    Accuracy,
    EditingDialogueScore,
    EditingScore,
    ScoreSettings,
    StoryDialogueScore,
    StoryScore,
    TaskScore,
)
from studio import atomic
from studio.geometry import Box
from studio.images import decode_image
from studio.plan import Dialogue, PlanItem, TurnPlan, turn_number
from studio.protocols import LocateTarget
from studio.subjects import parent_of

log = logging.getLogger(__name__)

STORY_BOX_THRESHOLD = 0.5
STORY_TEXT_THRESHOLD = 0.25


@dataclass
class Scorer:
    clip: ClipScorer
    locators: LocatorPool
    settings: ScoreSettings
    features: FeatureExtractor | None = None  # default: CLIP image features

    @property
    def quirks(self) -> bool:
        return self.settings.official_quirks

    def fid_features(self, images: list[Image.Image]) -> np.ndarray:
        return (self.features or self.clip.image_features)(images)


@dataclass
class DrawnTurn:
    number: int
    key: str
    plan: TurnPlan
    image: Image.Image


def read_task(run_dir: Path) -> Task | None:
    manifest = RunLayout(run_dir).manifest
    return RunManifest.model_validate_json(manifest.read_text()).task if manifest.exists() else None


def drawn_turns(layout: DialogueLayout, dialogue: Dialogue) -> list[DrawnTurn]:
    """The dialogue's turns whose picture exists, plans scaled to the picture's size."""
    out = []
    for position, (key, plan) in enumerate(zip(dialogue.turn_keys, dialogue.turns, strict=True)):
        number = turn_number(key) or position + 1
        path = layout.image(number)
        if not path.exists():
            continue
        image = decode_image(path.read_bytes())
        out.append(DrawnTurn(number, key, _fit(plan, image.height, image.width), image))
    return out


def _fit(plan: TurnPlan, height: int, width: int) -> TurnPlan:
    if (plan.height, plan.width) == (height, width):
        return plan
    sx, sy = width / plan.width, height / plan.height
    items = [item.model_copy(update={"box": item.box.scaled(sx, sy)}) for item in plan.items]
    return plan.model_copy(update={"height": height, "width": width, "items": items})


def detection_name(item: PlanItem, quirks: bool) -> str:
    """What the detector is asked for. The original asks for the phrase's last word ("girl, walking on street"
    → "street"); the fixed rule asks for the noun phrase before the first comma."""
    if quirks:
        words = item.phrase.split(" ")
        return words[-1] if words else item.phrase
    return item.detection_name


def crop_box(image: Image.Image, box: Box, square: bool) -> Image.Image:
    x0, y0, x1, y1 = box.pixel_bounds(image.height, image.width)
    crop = image.crop((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
    if not square or crop.width == crop.height:
        return crop
    side = max(crop.size)
    canvas = Image.new("RGB", (side, side))
    canvas.paste(crop, ((side - crop.width) // 2, (side - crop.height) // 2))
    return canvas


# --- story --------------------------------------------------------------------------------------------------


def score_story_dialogue(scorer: Scorer, name: str, turns: list[DrawnTurn]) -> StoryDialogueScore:
    locator = scorer.locators.get(STORY_BOX_THRESHOLD, STORY_TEXT_THRESHOLD)
    crops_per_turn = []
    for turn in turns:
        targets = [
            LocateTarget(
                subject_id=item.subject_id,
                name=detection_name(item, scorer.quirks),
                planned_box=item.box,
                parent_id=parent_of(item.subject_id),
            )
            for item in turn.plan.items
        ]
        found = locator.locate(turn.image, targets) if targets else {}
        crops: dict[str, Image.Image | None] = {}
        for item in turn.plan.items:
            hit = found.get(item.subject_id)
            ok = hit is not None and hit.found and hit.box is not None
            crops[item.subject_id] = crop_box(turn.image, hit.box, square=not scorer.quirks) if ok else None  # type: ignore[union-attr,arg-type]
        crops_per_turn.append(TurnCrops(turn=turn.number, key=turn.key, crops=crops))
    consistency = consistency_pairs(crops_per_turn, quirks=scorer.quirks)
    dialogue_ccs, per_subject = ccs(consistency, scorer.clip.image_embeddings)
    fid = dialogue_fid(consistency, scorer.fid_features) if dialogue_ccs is not None else None
    tis_scores = []
    if turns:
        prompts = [tis_prompt(t.plan.background, [i.phrase for i in t.plan.items], scorer.quirks) for t in turns]
        images = scorer.clip.image_embeddings([t.image for t in turns])
        texts = scorer.clip.text_embeddings(prompts)
        tis_scores = [float(TIS_SCALE * v) for v in np.sum(images * texts, axis=1)]
    return StoryDialogueScore(
        dialogue=name,
        ccs=dialogue_ccs,
        fid=fid,
        tis=dialogue_tis(tis_scores, quirks=scorer.quirks),
        per_subject_ccs=per_subject,
        turns_scored=len(turns),
        pairs=len(consistency.pairs),
        misses=sum(1 for p in consistency.pairs if p.later is None) + sum(consistency.zeros.values()),
    )


def aggregate_story(method: str, rows: list[StoryDialogueScore], settings: ScoreSettings) -> StoryScore:
    def mean(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    if settings.official_quirks:  # the original divides the TIS sum by every dialogue folder
        atis = sum(r.tis or 0.0 for r in rows) / len(rows) if rows else None
    else:
        atis = mean([r.tis for r in rows])
    return StoryScore(
        method=method,
        accs=mean([r.ccs for r in rows]),
        afid=mean([r.fid for r in rows]),
        atis=atis,
        dialogues_scored=sum(1 for r in rows if r.ccs is not None),
        settings=settings,
        dialogues=rows,
    )


# --- editing ------------------------------------------------------------------------------------------------


def score_editing_dialogue(scorer: Scorer, name: str, turns: list[DrawnTurn]) -> EditingDialogueScore:
    row = EditingDialogueScore(dialogue=name)
    pool, quirks, text = scorer.locators, scorer.quirks, ed.TEXT_THRESHOLD
    for turn in turns:
        index = {"turn 1": 1, "turn 2": 2, "turn 3": 3, "turn 4": 4}.get(turn.key) if quirks else turn.number
        plan, image = turn.plan, turn.image
        phrases = [item.phrase for item in plan.items]
        if index == 1:
            found = []
            for phrase in phrases:
                boxes = pool.boxes(image, phrase, ed.SPATIAL_THRESHOLD, text)
                found.append(ed.Found(phrase, boxes[0] if boxes else None))
            row.spatial = ed.spatial(plan.caption, found, quirks=quirks)
            if row.spatial is None and quirks:
                row.dropped = True
        elif index == 2:
            target = ed.attribute_target(plan.caption, phrases, quirks=quirks)
            count = len(pool.boxes(image, target, ed.ATTRIBUTE_THRESHOLD, text)) if target else 0
            row.attribute = ed.attribute(count)
        elif index == 3:
            query = plan.negative if plan.negative is not None else ("None" if quirks else None)
            count = len(pool.boxes(image, query, ed.NEGATIVE_THRESHOLD, text)) if query else 0
            row.negative = ed.negative(plan.negative, count, quirks=quirks)
        elif index == 4 and phrases:
            boxes = pool.boxes(image, phrases[0], ed.NUMERACY_THRESHOLD, text)
            row.numeracy = ed.numeracy(len(phrases), boxes, quirks=quirks)
    return row


CHECKS = ("spatial", "attribute", "negative", "numeracy")


def aggregate_editing(method: str, rows: list[EditingDialogueScore], settings: ScoreSettings) -> EditingScore:
    counts = {check: Accuracy() for check in CHECKS}
    kept = [r for r in rows if not r.dropped]
    for row in kept:
        for check in CHECKS:
            value = getattr(row, check)
            if value is not None:
                counts[check].total += 1
                counts[check].passed += int(value)
    return EditingScore(
        method=method,
        spatial=counts["spatial"].value,
        attribute=counts["attribute"].value,
        negative=counts["negative"].value,
        numeracy=counts["numeracy"].value,
        counts=counts,
        dialogues_scored=len(kept),
        settings=settings,
        dialogues=rows,
    )


# --- a whole run --------------------------------------------------------------------------------------------


def score_run(run_dir: str | Path, scorer: Scorer, task: Task | None = None, method: str | None = None) -> TaskScore:
    root = Path(run_dir)
    task = task or read_task(root)
    if task is None:
        raise ValueError(f"{root} has no run.json: say which task (story or editing) it is")
    layout = RunLayout(root)
    rows_story: list[StoryDialogueScore] = []
    rows_edit: list[EditingDialogueScore] = []
    for folder in sorted(layout.dialogue_dirs(), key=_natural):
        dialogue = Dialogue.model_validate_json((folder / "plan.json").read_text())
        turns = drawn_turns(DialogueLayout(folder), dialogue)
        if not turns:
            log.warning("%s: no pictures; skipped", folder.name)
            continue
        if task == "story":
            rows_story.append(score_story_dialogue(scorer, dialogue.name, turns))
        else:
            rows_edit.append(score_editing_dialogue(scorer, dialogue.name, turns))
    name = method or root.name
    if task == "story":
        return aggregate_story(name, rows_story, scorer.settings)
    return aggregate_editing(name, rows_edit, scorer.settings)


def _natural(path: Path) -> list[object]:
    """'dialogue 2' before 'dialogue 10'."""
    import re

    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def write_scores(scores: list[TaskScore], out_dir: Path, stem: str | None = None) -> tuple[Path, Path]:
    """`scores-<task>.json` (every row of every method) and `scores-<task>.md` (the table)."""
    task = scores[0].task
    stem = stem or f"scores-{task}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    atomic.write_json(json_path, [s.model_dump(mode="json") for s in scores])
    atomic.write_text(md_path, markdown_table(scores))
    return json_path, md_path
