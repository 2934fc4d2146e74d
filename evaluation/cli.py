"""`studio bench …`: the typer sub-app for the CMIGBench runner and scorer (mounted by entrypoints/cli.py)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from evaluation.records import RunSummary, Task
from evaluation.runner import RunOptions
from studio.protocols import Drawer
from studio.rejections import BackendUnavailable
from studio.settings import Settings

if TYPE_CHECKING:
    from evaluation.metrics.clip import ClipScorer

bench_app = typer.Typer(
    help="CMIGBench: draw a benchmark file resumably, then score the pictures.", no_args_is_help=True
)
console = Console(stderr=True)
CLIP_ENV = "STUDIO_BENCH_CLIP"


@bench_app.command("cmigbench")
def cmigbench(
    data: Annotated[Path, typer.Option(help="CMIGBench-form JSON (story.json, editing.json, a prompt book)")],
    out: Annotated[Path, typer.Option(help="output folder; an existing run there is resumed")],
    task: Annotated[str, typer.Option(help="story or editing (decides the scoring)")] = "story",
    preset: Annotated[str | None, typer.Option(help="model preset (default: the settings' default_preset)")] = None,
    steps: Annotated[
        int, typer.Option(min=1, help="denoising steps; subject-init, pre-render and refine steps follow in proportion")
    ] = 30,
    guidance_scale: Annotated[float, typer.Option()] = 7.5,
    subject_init: Annotated[bool, typer.Option(help="subject-initialized generation")] = True,
    mechanisms: Annotated[str | None, typer.Option(help="comma-separated mechanisms (docs/mechanisms.md)")] = None,
    canvas: Annotated[int, typer.Option(help="canvas side for 512-box-space files; 1024 = official run")] = 512,
    max_side: Annotated[int | None, typer.Option(help="shrink larger canvases to this side (quick runs)")] = None,
    seed: Annotated[int, typer.Option(help="base seed; each turn's seed hashes it with dialogue and turn")] = 0,
    shard: Annotated[str, typer.Option(help="i/n: draw only the i-th of n round-robin shards of dialogues")] = "1/1",
    limit_dialogues: Annotated[int | None, typer.Option(min=1)] = None,
    limit_turns: Annotated[int | None, typer.Option(min=1)] = None,
    dialogue: Annotated[list[str] | None, typer.Option(help="only this dialogue (repeatable)")] = None,
    through_agents: Annotated[
        bool, typer.Option(help="send captions to the agents instead of the file's plans")
    ] = False,
    official_quirks: Annotated[bool, typer.Option(help="resume like the original: memory not rebuilt")] = False,
    keep_going: Annotated[bool, typer.Option(help="record a failing dialogue and continue")] = False,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
    workers: Annotated[
        str, typer.Option(help="embedded: the models in this process; celery: the `studio worker` pool")
    ] = "embedded",
    parallel: Annotated[
        int | None,
        typer.Option(min=1, help="dialogues drawn at once (default: 1; with celery, the preset's live workers)"),
    ] = None,
) -> None:
    """Draw every dialogue of DATA into OUT/<dialogue>/turn<k>.png, resuming whatever is already there."""
    from evaluation.runner import RunConfigMismatch, run_benchmark
    from evaluation.seeds import parse_shard
    from studio.draw import DrawSettings, parse_mechanisms
    from studio.settings import get_settings
    from studio.storage.images import FileImageStore

    if task not in ("story", "editing"):
        raise typer.BadParameter("task must be story or editing")
    if workers not in ("embedded", "celery"):
        raise typer.BadParameter("workers must be embedded or celery")
    try:
        shard_pair = parse_shard(shard)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = get_settings()
    preset_name = preset or settings.default_preset
    chosen: dict[str, object] = {} if subject_init else {"subject_init": False}
    if mechanisms is not None:
        chosen["mechanisms"] = parse_mechanisms(mechanisms)
    try:
        draw_settings = DrawSettings(preset=preset_name, steps=steps, guidance_scale=guidance_scale, **chosen)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    options = RunOptions(
        task=_task(task),
        canvas=canvas,
        max_side=max_side,
        base_seed=seed,
        shard=shard_pair,
        limit_dialogues=limit_dialogues,
        limit_turns=limit_turns,
        dialogues=dialogue or None,
        refresh=settings.vision.refresh,
        official_quirks=official_quirks,
        keep_going=keep_going,
        preset=preset_name,
        progress=progress,
    )
    from entrypoints.runtime import build_engine, load_preset_drawer

    drawer = _pool_drawer(settings) if workers == "celery" else load_preset_drawer(settings, preset_name)
    if parallel is None:
        parallel = _live_workers(settings, preset_name) if workers == "celery" else 1
    images = FileImageStore(out / ".images")
    engine = build_engine(settings.model_copy(update={"data_dir": out}), drawer, images) if through_agents else None

    def run(shard_options: RunOptions) -> RunSummary:
        return run_benchmark(
            data,
            out,
            drawer=None if engine is not None else drawer,
            engine=engine,
            settings=draw_settings,
            options=shard_options,
            images=images,
        )

    try:
        summary = run_in_parallel(run, options, parallel)
    except RunConfigMismatch as exc:
        typer.echo(f"error: {exc}", err=True)  # one line, not a traceback
        raise typer.Exit(2) from exc
    finally:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
    console.print(
        f"{len(summary.dialogues)} dialogues: {summary.turns_drawn} turns drawn, "
        f"{summary.turns_skipped} already done, {len(summary.errors)} failed → {out}"
    )
    if summary.errors:
        raise typer.Exit(1)


@bench_app.command("score")
def score(
    runs: Annotated[list[Path], typer.Argument(help="run folders (one table row each)")],
    task: Annotated[str | None, typer.Option(help="story or editing (default: from the run's run.json)")] = None,
    method: Annotated[list[str] | None, typer.Option(help="row name per run folder (default: folder name)")] = None,
    clip: Annotated[
        str, typer.Option(envvar=CLIP_ENV, help="CLIP hub id or local folder, or 'tiny' (smoke runs)")
    ] = "openai/clip-vit-base-patch32",
    detector: Annotated[str | None, typer.Option(help="detector hub id / folder / 'tiny' (default: settings)")] = None,
    segmenter: Annotated[
        str | None, typer.Option(help="segmenter hub id / folder / 'tiny' (default: settings)")
    ] = None,
    device: Annotated[str, typer.Option()] = "auto",
    official_quirks: Annotated[bool, typer.Option(help="score exactly as the original evaluators")] = False,
    out: Annotated[Path | None, typer.Option(help="where to write scores-<task>.json/.md (default: first run)")] = None,
) -> None:
    """Score run folders: aCCS / aFID / aTIS (story) or the four accuracies (editing); JSON + Markdown table."""
    from evaluation.metrics.detection import LocatorPool, vision_factory
    from evaluation.results import ScoreSettings
    from evaluation.scoring import Scorer, read_task, score_run, write_scores
    from studio.settings import get_settings

    if method and len(method) != len(runs):
        raise typer.BadParameter("give one --method per run folder")
    vision = get_settings().vision
    detector, segmenter = detector or vision.detector, segmenter or vision.segmenter
    settings = ScoreSettings(
        clip=clip,
        detector=detector,
        segmenter=segmenter,
        official_quirks=official_quirks,
        fid_features=f"CLIP image features ({clip}), not Inception-v3",
    )
    scorer = Scorer(
        clip=_load_clip(clip, device),
        locators=LocatorPool(vision_factory(detector, segmenter, device)),
        settings=settings,
    )
    tasks = {task or read_task(run) for run in runs}
    if len(tasks) != 1 or None in tasks:
        raise typer.BadParameter("the runs must share one task; pass --task when a folder has no run.json")
    chosen = _task(str(tasks.pop()))
    scores = [score_run(run, scorer, task=chosen, method=(method[i] if method else None)) for i, run in enumerate(runs)]
    json_path, md_path = write_scores(scores, out or runs[0])
    console.print(md_path.read_text())
    console.print(f"wrote {json_path} and {md_path}")


def _load_clip(name: str, device: str) -> ClipScorer:
    """The metrics' CLIP model: from a local folder, the local hub cache, or the hub (offline works once it is
    cached). When none has it, one line says what to pass instead of a traceback."""
    from studio.library_logs import quiet_known_library_warnings

    quiet_known_library_warnings()
    from evaluation.metrics.clip import ClipScorer

    try:
        return ClipScorer.load(name, device=device)
    except OSError as exc:
        typer.echo(
            f"error: cannot load the CLIP model {name!r} (no local copy, and the hub is unreachable or has no such "
            f"model): pass --clip FOLDER (a local CLIP checkpoint) or set {CLIP_ENV}; --clip tiny for a smoke run",
            err=True,
        )
        raise typer.Exit(2) from exc


def run_in_parallel(run: Callable[[RunOptions], RunSummary], options: RunOptions, parallel: int) -> RunSummary:
    """Draw the dialogues of `options`' shard on `parallel` threads (each a sub-shard: a dialogue's turns stay in
    order on one thread) and add up their summaries. With the drawer pool, each thread keeps one worker busy."""
    if parallel <= 1:
        return run(options)
    index, count = options.shard
    shards = [
        options.model_copy(update={"shard": (index + count * k, count * parallel), "progress": False})
        for k in range(parallel)
    ]
    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="bench") as pool:
        parts = list(pool.map(run, shards))
    summary = RunSummary(out=parts[0].out)
    for part in parts:
        summary.dialogues += part.dialogues
        summary.turns_drawn += part.turns_drawn
        summary.turns_skipped += part.turns_skipped
        summary.errors += part.errors
    return summary


def _pool_drawer(settings: Settings) -> Drawer:
    from workers.drawer_client import CeleryDrawer

    drawer = CeleryDrawer(settings.drawer)
    try:
        drawer.check_reachable()
    except BackendUnavailable as exc:
        raise typer.BadParameter(str(exc)) from exc
    return drawer


def _live_workers(settings: Settings, preset: str) -> int:
    from workers.jobs import redis_client
    from workers.pool import PoolRecords

    pool = settings.drawer
    records = PoolRecords(redis_client(pool.broker_url, pool.connect_timeout_s), pool.prefix)
    return max(1, sum(beat.preset == preset for beat in records.workers()))


def _task(value: str) -> Task:
    if value == "story":
        return "story"
    if value == "editing":
        return "editing"
    raise typer.BadParameter("task must be story or editing")
