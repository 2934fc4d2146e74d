"""`studio consistory`: ConsiStory's batch mode from the command line (studio/consistory.py, drawer/consistory.py).
Loads the preset's drawer in this process, draws the N settings of one subject in one batch with the first two
as anchors, and writes OUT/image-NN.png and OUT/summary.json."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from studio.consistory import ANCHORS, ConsistoryBatch, ConsistoryImage, ConsistorySummary
from studio.draw import DrawSettings, SharedAttentionSettings
from studio.settings import Settings

console = Console()


def consistory(
    subject: Annotated[str, typer.Option(help="the subject of every picture, e.g. 'a girl with a red scarf'")],
    setting: Annotated[
        list[str] | None,
        typer.Option("--settings", help="one picture's setting, e.g. 'in a park' (repeat; the first two are anchors)"),
    ] = None,
    settings_file: Annotated[
        Path | None,
        typer.Option(exists=True, dir_okay=False, help="more settings, one per non-empty line (after --settings)"),
    ] = None,
    preset: Annotated[str, typer.Option(help="model preset")] = "tiny",
    size: Annotated[str, typer.Option(help="canvas: N for N×N or WIDTHxHEIGHT (multiples of 8)")] = "512",
    steps: Annotated[int, typer.Option(help="denoising steps")] = 30,
    guidance_scale: Annotated[float, typer.Option(help="classifier-free guidance scale")] = 7.5,
    seed: Annotated[
        int | None, typer.Option(help="seed of picture 1; picture i uses seed + i - 1 (default: random)")
    ] = None,
    negative: Annotated[str, typer.Option(help="negative prompt of every picture")] = "",
    mask_dropout: Annotated[float, typer.Option(help="fraction of anchor subject patches dropped")] = 0.5,
    vanilla_query_steps: Annotated[float, typer.Option(help="fraction of first steps blending own attention")] = 0.1,
    out: Annotated[Path, typer.Option(help="folder for image-NN.png and summary.json")] = Path("consistory-output"),
) -> None:
    """ConsiStory batch mode: one picture of SUBJECT per --settings, drawn together in one batch; every picture's
    up-block self-attention also attends to the subject patches of the first two (the anchors)."""
    batch = _batch(subject, setting, settings_file, preset, size, steps, guidance_scale, seed, negative,
                   mask_dropout, vanilla_query_steps)
    app_settings = Settings()
    try:
        model = app_settings.preset(preset)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--preset") from exc
    try:
        batch.check_canvas(model.max_side)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--size") from exc

    from drawer import load_drawer
    from drawer.consistory import draw_consistory
    from studio.failures import DrawError

    started = time.perf_counter()
    with console.status(f"loading preset {preset!r}…"):
        drawer = load_drawer(model, max_subjects=app_settings.max_subjects)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task(f"{len(batch.settings)} pictures", total=batch.draw.steps)
        try:
            drawn = draw_consistory(drawer, batch, on_step=lambda step, total: progress.update(task, completed=step))
        except DrawError as exc:
            console.print(f"[red]error: {exc.reason}[/red]")
            raise typer.Exit(1) from exc
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (prompt, data) in enumerate(zip(batch.prompts(), drawn.images, strict=True)):
        name = f"image-{i:02d}.png"
        (out / name).write_bytes(data)
        images.append(
            ConsistoryImage(
                index=i, prompt=prompt, file=name, anchor=i in ANCHORS, seed=drawn.seeds[i],
                subject_tokens=drawn.subject_tokens[i],
            )
        )
    summary = ConsistorySummary(
        subject=batch.subject, preset=preset, height=batch.height, width=batch.width, anchors=list(ANCHORS),
        images=images, settings=batch.draw, seconds=round(time.perf_counter() - started, 3),
    )
    (out / "summary.json").write_text(summary.model_dump_json(indent=2), encoding="utf-8")
    console.print(f"{len(images)} pictures of {batch.subject!r} (anchors 1 and 2) saved in {out.resolve()}")


def _batch(
    subject: str, setting: list[str] | None, settings_file: Path | None, preset: str, size: str, steps: int,
    guidance_scale: float, seed: int | None, negative: str, mask_dropout: float, vanilla_query_steps: float,
) -> ConsistoryBatch:
    """The validated batch; each problem a one-line error naming its option."""
    settings = list(setting or [])
    if settings_file is not None:
        lines = settings_file.read_text(encoding="utf-8").splitlines()
        settings += [line.strip() for line in lines if line.strip()]
    if len(settings) < 2:
        raise typer.BadParameter(f"give at least 2 settings (the first two are the anchors), not {len(settings)}",
                                 param_hint="--settings")
    height, width = _size(size)
    try:
        shared = SharedAttentionSettings(mask_dropout=mask_dropout, vanilla_query_steps=vanilla_query_steps)
        draw = DrawSettings(
            preset=preset, steps=steps, guidance_scale=guidance_scale, seed=seed, mechanisms=["shared_attention"],
            shared_attention=shared,
        )
        return ConsistoryBatch(
            subject=subject, settings=settings, height=height, width=width, negative=negative, draw=draw
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        raise typer.BadParameter(error["msg"], param_hint=_OPTION.get(str(error["loc"][-1]), "--settings")) from exc


_OPTION = {
    "subject": "--subject", "settings": "--settings", "steps": "--steps", "guidance_scale": "--guidance-scale",
    "seed": "--seed", "negative": "--negative", "mask_dropout": "--mask-dropout",
    "vanilla_query_steps": "--vanilla-query-steps", "preset": "--preset",
}


def _size(size: str) -> tuple[int, int]:
    """(height, width) from N (square) or WIDTHxHEIGHT."""
    parts = size.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
        raise typer.BadParameter(f"{size!r}: give N (square) or WIDTHxHEIGHT, e.g. 768x512", param_hint="--size")
    sides = [int(part) for part in parts]
    return sides[-1], sides[0]
