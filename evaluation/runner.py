"""The CMIGBench batch runner: every dialogue of a file, turn by turn, through the service's own turn code,
resumable after a crash and splittable across machines."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from evaluation.canvas import fit_plan
from evaluation.executors import AgentExecutor, PlanExecutor, TurnExecutor, TurnInput, TurnOutput
from evaluation.layout import DialogueLayout, RunLayout
from evaluation.records import CropRecord, DialogueError, RunManifest, RunSummary, Task, TurnRecord
from evaluation.resume import finished_prefix, restore_memory
from evaluation.seeds import shard_items, stable_seed
from studio import atomic
from studio.draw import DrawSettings
from studio.plan import Dialogue, load_dialogues, turn_number
from studio.protocols import Drawer, HistoryEntry, ImageStore, TurnEngine
from studio.storage.images import FileImageStore

log = logging.getLogger(__name__)

AfterTurn = Callable[[str, int], None]
"""Called as (dialogue, turn) once a turn is on disk. Tests raise from it to simulate a crash."""


class RunConfigMismatch(RuntimeError):
    """The output folder holds a run made with other settings."""


class RunOptions(BaseModel):
    task: Task = "story"
    canvas: int = Field(default=512, description="canvas side for files in CMIGBench's 512 box space; 1024 = official")
    base_seed: int = Field(default=0, ge=0)
    shard: tuple[int, int] = (1, 1)
    limit_dialogues: int | None = Field(default=None, ge=1)
    limit_turns: int | None = Field(default=None, ge=1)
    max_side: int | None = Field(
        default=None, ge=64, description="scale larger canvases down to this longer side (quick runs); None: as given"
    )
    dialogues: list[str] | None = Field(default=None, description="only these dialogue names")
    refresh: Literal["first", "better"] = "first"
    official_quirks: bool = Field(default=False, description="resume without rebuilding memory, like the original")
    keep_going: bool = Field(default=False, description="record a failing dialogue and go on with the next")
    preset: str | None = None
    progress: bool = True


def read_data(data: str | Path | dict[str, Any]) -> tuple[dict[str, Any], str]:
    raw = json.dumps(data, sort_keys=True).encode() if isinstance(data, dict) else Path(data).read_bytes()
    return (data if isinstance(data, dict) else json.loads(raw)), hashlib.sha256(raw).hexdigest()


def select_dialogues(dialogues: list[Dialogue], options: RunOptions) -> list[Dialogue]:
    chosen = dialogues
    if options.dialogues is not None:
        wanted = set(options.dialogues)
        unknown = wanted - {d.name for d in dialogues}
        if unknown:
            raise KeyError(f"no such dialogues in the file: {sorted(unknown)}")
        chosen = [d for d in chosen if d.name in wanted]
    if options.limit_dialogues is not None:
        chosen = chosen[: options.limit_dialogues]
    return shard_items(chosen, *options.shard)


def run_benchmark(
    data: str | Path | dict[str, Any],
    out: str | Path,
    *,
    drawer: Drawer | None = None,
    engine: TurnEngine | None = None,
    settings: DrawSettings | None = None,
    options: RunOptions | None = None,
    images: ImageStore | None = None,
    after_turn: AfterTurn | None = None,
) -> RunSummary:
    """Draw every selected dialogue into `out`. Give `drawer` (explicit-plan turns, the default) or `engine`
    (captions go through the agents). Finished turns found in `out` are kept, not redrawn."""
    options = options or RunOptions()
    settings = settings or DrawSettings()
    if (drawer is None) == (engine is None):
        raise ValueError("give exactly one of drawer (explicit plans) or engine (through the agents)")
    layout = RunLayout(Path(out))
    layout.root.mkdir(parents=True, exist_ok=True)
    body, digest = read_data(data)
    _check_manifest(layout, _manifest(options, settings, digest, through_agents=engine is not None))
    store: ImageStore = images if images is not None else FileImageStore(layout.image_store)
    executor: TurnExecutor
    if engine is not None:
        executor = AgentExecutor(engine=engine, images=store)
    else:
        assert drawer is not None
        executor = PlanExecutor(drawer=drawer, images=store, refresh=options.refresh)

    dialogues = select_dialogues(load_dialogues(body, canvas=(options.canvas, options.canvas)), options)
    if options.max_side is not None:
        dialogues = [
            d.model_copy(update={"turns": [fit_plan(t, options.max_side) for t in d.turns]}) for d in dialogues
        ]
    summary = RunSummary(out=str(layout.root), dialogues=[d.name for d in dialogues])
    total = sum(len(_turns(d, options)) for d in dialogues)
    with _progress(options.progress) as progress:
        task_id = progress.add_task("cmigbench", total=total)
        for dialogue in dialogues:
            progress.update(task_id, description=dialogue.name)
            try:
                _run_dialogue(
                    dialogue,
                    layout.dialogue(dialogue.name),
                    executor,
                    store,
                    settings,
                    options,
                    summary,
                    advance=lambda: progress.advance(task_id),
                    after_turn=after_turn,
                )
            except Exception as exc:
                if not options.keep_going:
                    raise
                log.exception("dialogue %s failed", dialogue.name)
                summary.errors.append(DialogueError(dialogue=dialogue.name, turn=-1, error=repr(exc)))
    return summary


def _turns(dialogue: Dialogue, options: RunOptions) -> list[int]:
    numbers = [turn_number(key) or position + 1 for position, key in enumerate(dialogue.turn_keys)]
    return numbers[: options.limit_turns] if options.limit_turns is not None else numbers


def _run_dialogue(
    dialogue: Dialogue,
    layout: DialogueLayout,
    execute: TurnExecutor,
    images: ImageStore,
    settings: DrawSettings,
    options: RunOptions,
    summary: RunSummary,
    advance: Callable[[], None],
    after_turn: AfterTurn | None,
) -> None:
    numbers = _turns(dialogue, options)
    layout.root.mkdir(parents=True, exist_ok=True)
    if not layout.plan.exists():
        atomic.write_json(layout.plan, dialogue)
    done = finished_prefix(layout, numbers)
    if options.official_quirks:
        memory, previous = [], None  # the original skips finished turns and starts the memory empty
    else:
        memory, previous = restore_memory(layout, done, images)
    history = [HistoryEntry(turn_index=r.turn, message=r.plan.caption, plan=r.plan) for r in done]
    for _ in done:
        summary.turns_skipped += 1
        advance()
    for position in range(len(done), len(numbers)):
        turn, plan = numbers[position], dialogue.turns[position]
        turn_settings = settings.model_copy(update={"seed": stable_seed(dialogue.name, turn, options.base_seed)})
        request = TurnInput(
            dialogue=dialogue.name,
            turn=turn,
            plan=plan,
            settings=turn_settings,
            memory=memory,
            previous_image_id=previous,
            history=list(history),
        )
        try:
            output = execute(request)
        except Exception as exc:
            atomic.write_json(layout.error, DialogueError(dialogue=dialogue.name, turn=turn, error=repr(exc)))
            raise
        record = _save_turn(layout, dialogue, position, turn, turn_settings.seed or 0, output)
        memory, previous = output.memory, images.put(output.result.image)
        history.append(HistoryEntry(turn_index=turn, message=plan.caption, plan=output.plan))
        summary.turns_drawn += 1
        advance()
        log.debug("drew %s turn %d (%d crops)", dialogue.name, turn, len(record.crops))
        if after_turn is not None:
            after_turn(dialogue.name, turn)
    layout.error.unlink(missing_ok=True)


def _save_turn(
    layout: DialogueLayout, dialogue: Dialogue, position: int, turn: int, seed: int, output: TurnOutput
) -> TurnRecord:
    """Crops first, then the image, then the record (the done marker), then the memory snapshot."""
    result = output.result
    crops = []
    for subject_id, crop in sorted(result.crops.items()):
        crop_file = crop_sha = None
        if crop.crop is not None:
            path = layout.crop(turn, subject_id)
            atomic.write_bytes(path, crop.crop)
            crop_file, crop_sha = str(path.relative_to(layout.root)), hashlib.sha256(crop.crop).hexdigest()
        crops.append(CropRecord.from_crop(crop, crop_file, crop_sha))
    atomic.write_bytes(layout.image(turn), result.image)
    record = TurnRecord(
        dialogue=dialogue.name,
        turn=turn,
        turn_key=dialogue.turn_keys[position],
        seed=seed,
        image_file=layout.image(turn).name,
        image_sha256=hashlib.sha256(result.image).hexdigest(),
        width=result.width,
        height=result.height,
        plan=output.plan,
        references=output.references,
        crops=crops,
        memory=output.memory,
        timings=result.timings,
        info=output.info,
    )
    atomic.write_json(layout.record(turn), record)
    atomic.write_json(layout.memory, [s.model_dump(mode="json") for s in output.memory])
    return record


def _manifest(options: RunOptions, settings: DrawSettings, digest: str, through_agents: bool) -> RunManifest:
    return RunManifest(
        task=options.task,
        data_sha256=digest,
        canvas=options.canvas,
        base_seed=options.base_seed,
        settings=settings.model_copy(update={"seed": None}),
        preset=options.preset,
        through_agents=through_agents,
        official_quirks=options.official_quirks,
        refresh=options.refresh,
        max_side=options.max_side,
    )


def _check_manifest(layout: RunLayout, manifest: RunManifest) -> None:
    if layout.manifest.exists():
        existing = RunManifest.model_validate_json(layout.manifest.read_text())
        changed = _changed_options(existing, manifest)
        if changed:
            raise RunConfigMismatch(
                f"{layout.root} holds a run made with other settings: {'; '.join(changed)}. "
                "Resume with the same options or choose another --out"
            )
        return
    atomic.write_json(layout.manifest, manifest)


_OPTION_OF_FIELD = {
    "task": "--task",
    "canvas": "--canvas",
    "base_seed": "--seed",
    "preset": "--preset",
    "through_agents": "--through-agents",
    "official_quirks": "--official-quirks",
    "max_side": "--max-side",
    "refresh": "STUDIO_VISION__REFRESH",
    "settings.steps": "--steps",
    "settings.guidance_scale": "--guidance-scale",
    "settings.subject_init": "--subject-init",
    "settings.mechanisms": "--mechanisms",
}
"""The `studio bench cmigbench` option behind each manifest field a user chooses."""


def _changed_options(existing: RunManifest, wanted: RunManifest) -> list[str]:
    """'--steps 30 (now 2)' for each option that differs; fields without an option of their own (e.g. the
    step counts that follow --steps) are named only when no option explains the difference."""
    old, new = existing.model_dump(mode="json"), wanted.model_dump(mode="json")
    fields = [
        (f"{key}.{sub}", old[key].get(sub), value)
        for key in old
        if isinstance(old[key], dict) and isinstance(new.get(key), dict)
        for sub, value in new[key].items()
        if old[key].get(sub) != value
    ] + [(key, old[key], new.get(key)) for key in old if not isinstance(old[key], dict) and old[key] != new.get(key)]
    named = [
        "--data (another file's contents)" if name == "data_sha256" else f"{_OPTION_OF_FIELD[name]} {was} (now {now})"
        for name, was, now in fields
        if name in _OPTION_OF_FIELD or name == "data_sha256"
    ]
    return named or [f"{name} {was} (now {now})" for name, was, now in fields]


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )
