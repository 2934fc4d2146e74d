"""The `studio` command: serve, keys, chat, story, consistory, demo, bench."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from studio.draw import MECHANISMS_HELP, DrawSettings, parse_mechanisms
from studio.settings import Settings
from studio.turns import Turn, TurnEvent

if TYPE_CHECKING:
    from api.client import StudioClient
    from studio.storage.database import Database

app = typer.Typer(help="Multi-turn, subject-consistent image generation service.", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console()
notes = Console(stderr=True, style="dim")  # one-line notes (which data folder) that scripts reading stdout skip

DEMO_DIALOGUE = [
    "a girl and a boy walk to school on a sunny street",
    "the boy waves goodbye to the girl",
    "she now wears a red hat",
    "a dog runs towards the girl in the park",
]


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="folder of the database, images and keys (default: STUDIO_DATA_DIR, else the per-user data folder)",
        ),
    ] = None,
) -> None:
    """Multi-turn, subject-consistent image generation service."""
    ctx.obj = data_dir


def _settings(ctx: typer.Context) -> Settings:
    """The settings of a command that uses the data folder: `--data-dir` wins over STUDIO_DATA_DIR and the
    config file; the command says in one line which folder it uses."""
    data_dir = ctx.find_root().obj
    settings = Settings(data_dir=data_dir) if isinstance(data_dir, Path) else Settings()
    notes.print(f"data folder: {settings.data_dir.resolve()}")
    return settings


def _database(settings: Settings) -> Database:
    from studio.storage.database import Database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    return db


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="bind address (default from settings)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default from settings)")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="local mode: no API keys (loopback only)")] = False,
) -> None:
    """Run the REST API (uvicorn)."""
    import uvicorn

    from api.app import create_app
    from entrypoints.runtime import build_service

    settings = _settings(ctx)
    updates: dict[str, object] = {}
    if host:
        updates["host"] = host
    if port:
        updates["port"] = port
    if no_auth:
        updates["auth"] = settings.auth.model_copy(update={"enabled": False})
    settings = settings.model_copy(update=updates)
    uvicorn.run(create_app(build_service(settings)), host=settings.host, port=settings.port)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Migrate the configured database to the newest schema (`alembic upgrade head`). The server also does
    this when it starts; run it yourself to migrate before rolling out a new version."""
    from studio.storage.database import Database

    settings = _settings(ctx)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    revision = Database(settings.resolved_database_url).migrate()
    console.print(f"database at revision {revision}")


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="the tenant the key acts for")] = "default",
    name: Annotated[str, typer.Option(help="a label")] = "",
) -> None:
    """Create an API key; it is shown once and stored hashed."""
    key = _database(_settings(ctx)).create_key(tenant, name)
    console.print(f"[bold]{key}[/bold]")
    console.print(f"tenant: {tenant}. Keep it: only its hash is stored.", style="dim")


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    table = Table("id", "tenant", "name", "created", "revoked")
    for row in _database(_settings(ctx)).list_keys():
        table.add_row(row["id"], row["tenant"], row["name"], str(row["created_at"]), str(row["revoked"]))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: str) -> None:
    if not _database(_settings(ctx)).revoke_key(key_id):
        raise typer.BadParameter(f"no key with id {key_id}")
    console.print(f"revoked {key_id}")


def _plan_table(turn: Turn) -> Table:
    table = Table("subject", "phrase", "box (x, y, w, h)", "found", title=f"turn {turn.index}: {turn.status}")
    found = {crop.subject_id: crop for crop in turn.crops}
    for item in turn.plan.items if turn.plan else []:
        box = item.box
        crop = found.get(item.subject_id)
        table.add_row(
            item.subject_id,
            item.phrase,
            f"{box.x:.0f}, {box.y:.0f}, {box.w:.0f}, {box.h:.0f}",
            "-" if crop is None else ("yes" if crop.found else f"no ({crop.reason})"),
        )
    return table


def _save_turn(client: StudioClient, turn: Turn, out: Path) -> list[str]:
    saved = []
    for suffix, url in (("", turn.image_url), ("-debug", turn.debug_image_url)):
        if url:
            path = out / f"turn{turn.index}{suffix}.png"
            path.write_bytes(client.get_image(url))
            saved.append(str(path))
    return saved


def _write_contact_sheet(client: StudioClient, session_id: str, out: Path) -> Path:
    """OUT/contact-sheet.png: every turn of the session with its debug overlay and the subject memory."""
    from api.client import StudioError
    from vision.contact_sheet import render_contact_sheet, sheet_turns

    def fetch(url: str) -> bytes | None:
        try:
            return client.get_image(url)
        except StudioError:  # an image that is gone is drawn as a placeholder
            return None

    path = out / "contact-sheet.png"
    path.write_bytes(
        render_contact_sheet(sheet_turns(client.list_turns(session_id), client.list_subjects(session_id), fetch))
    )
    return path


def _follow(client: StudioClient, turn: Turn, progress: Progress, previews: Path | None = None) -> Turn:
    """Wait for a turn, showing its events as a progress bar; the finished turn, or TurnFailedError. With
    `previews`, live previews are saved there as turn-NNN-step-SSS.jpg (or .webp)."""
    from api.client import preview_of

    task = progress.add_task(f"turn {turn.index}", total=None)

    def show(event: TurnEvent) -> None:
        preview = preview_of(event)
        if preview is not None:
            if previews is not None:
                preview.save(previews, f"turn-{turn.index:03d}-step-{preview.step:03d}")
        elif event.type == "step":
            progress.update(task, completed=event.data["step"], total=event.data["total"])
        else:
            progress.update(task, description=f"turn {turn.index}: {event.type}")

    try:
        return client.wait(turn, on_event=show)
    finally:
        progress.remove_task(task)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def _canvas(size: str | None, height: int, width: int) -> tuple[int, int]:
    """(height, width) from `--size` (N for N×N, or WIDTHxHEIGHT), else from --height/--width."""
    if size is None:
        return height, width
    parts = size.lower().split("x")
    if len(parts) not in (1, 2) or not all(part.strip().isdigit() for part in parts):
        raise typer.BadParameter(f"{size!r}: give N (square) or WIDTHxHEIGHT, e.g. 768x512", param_hint="--size")
    side = [int(part) for part in parts]
    return side[-1], side[0]


def _cancel(client: StudioClient, turn: Turn) -> None:
    """Ctrl-C while waiting: cancel the turn on the server and say so (a second Ctrl-C leaves the chat)."""
    from api.client import StudioError

    console.print(f"[yellow]Ctrl-C: cancelling turn {turn.index} on the server…[/yellow]")
    try:
        client.cancel_turn(turn.session_id, turn.index)
    except StudioError as exc:  # 409: it finished meanwhile
        console.print(f"[yellow]turn {turn.index} was not cancelled: {exc.detail}[/yellow]")
        return
    console.print(f"[yellow]turn {turn.index} cancelled.[/yellow] Ctrl-C again at the prompt to quit.")


@app.command()
def chat(
    url: Annotated[str, typer.Option(help="service URL")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="STUDIO_API_KEY", help="bearer API key")] = None,
    session: Annotated[str | None, typer.Option(help="continue this session id")] = None,
    size: Annotated[
        str | None, typer.Option(help="canvas: N for N×N or WIDTHxHEIGHT (multiples of 8); overrides --height/--width")
    ] = None,
    height: Annotated[int, typer.Option(help="canvas height of a new session")] = 512,
    width: Annotated[int, typer.Option(help="canvas width of a new session")] = 512,
    steps: Annotated[
        int | None, typer.Option(min=1, help="denoising steps per turn (pre-render and subject-init steps follow)")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="model preset (default: tiny)")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="seed of every turn (default: random)")] = None,
    out: Annotated[Path, typer.Option(help="folder for the images")] = Path("chat-output"),
    mechanisms: Annotated[str | None, typer.Option(help=MECHANISMS_HELP)] = None,
    fast: Annotated[
        bool, typer.Option("--fast", help="fast mode: the preset's few-step weights, 4 steps (docs/fast_mode.md)")
    ] = False,
    previews: Annotated[
        Path | None, typer.Option(help="save live previews in this folder (asks for previews in normal mode too)")
    ] = None,
) -> None:
    """Interactive chat: each line is a turn; shows the layout and saves the image (and debug picture).
    Ctrl-C while a turn is drawn cancels it on the server; Ctrl-C at the prompt quits."""
    from api.client import StudioClient, TurnFailedError

    height, width = _canvas(size, height, width)
    chosen = {
        name: value
        for name, value in {
            "steps": steps,
            "preset": preset,
            "seed": seed,
            "mechanisms": parse_mechanisms(mechanisms) if mechanisms is not None else None,
            "mode": "fast" if fast else None,
            "previews": True if previews is not None else None,
        }.items()
        if value is not None
    }
    settings = DrawSettings(**chosen) if chosen else None  # None: the server's defaults
    out.mkdir(parents=True, exist_ok=True)
    with StudioClient(url, api_key=api_key) as client:
        if session is None:
            session = client.create_session(title="chat", height=height, width=width, settings=settings).id
        console.print(f"session {session}; images are saved in {out.resolve()}. Empty line, Ctrl-D or Ctrl-C to quit.")
        while True:
            try:
                message = console.input("[bold cyan]you>[/bold cyan] ").strip()
            except (EOFError, KeyboardInterrupt):
                break
            if not message:
                break
            posted = client.post_turn(session, message=message, settings=settings)
            try:
                with _progress() as progress:
                    turn = _follow(client, posted, progress, previews)
            except TurnFailedError as exc:
                console.print(f"[red]{exc}[/red]")
                continue
            except KeyboardInterrupt:
                _cancel(client, posted)
                continue
            console.print(_plan_table(turn))
            console.print("saved: " + ", ".join(_save_turn(client, turn, out)))


def _story_file(path: Path) -> dict[str, Any]:
    """The story in FILE: JSON or YAML (a list of prompts, or an object with `prompts` and other StoryCreate
    fields), else plain text with one prompt per non-empty line."""
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".json", ".yaml", ".yml"):
        if suffix == ".json":
            loaded = json.loads(text)
        else:
            try:
                import yaml
            except ImportError as exc:
                raise typer.BadParameter("reading YAML needs PyYAML (pip install pyyaml)", param_hint="FILE") from exc
            loaded = yaml.safe_load(text)
        if isinstance(loaded, list):
            return {"prompts": loaded}
        if isinstance(loaded, dict) and "prompts" in loaded:
            return loaded
        raise typer.BadParameter("give a list of prompts or an object with 'prompts'", param_hint="FILE")
    return {"prompts": [line.strip() for line in text.splitlines() if line.strip()]}


@app.command()
def story(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="prompts: JSON, YAML or one per line")],
    url: Annotated[str, typer.Option(help="service URL")] = "http://127.0.0.1:8000",
    api_key: Annotated[str | None, typer.Option(envvar="STUDIO_API_KEY", help="bearer API key")] = None,
    rounds: Annotated[int | None, typer.Option(min=0, help="refinement rounds after round 0 (default 10)")] = None,
    seed: Annotated[int | None, typer.Option(min=0, help="the seed of every frame and round (default: random)")] = None,
    style: Annotated[str | None, typer.Option(help="style template: storybook, comic, watercolor, film")] = None,
    size: Annotated[str | None, typer.Option(help="canvas: N for N×N or WIDTHxHEIGHT (multiples of 8)")] = None,
    preset: Annotated[str | None, typer.Option(help="model preset (default: tiny)")] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="denoising steps per frame")] = None,
    out: Annotated[Path, typer.Option(help="folder for the frames: one sub-folder per round")] = Path("story-output"),
) -> None:
    """Long-story mode (docs/stories.md): draw every prompt of FILE as a frame, then refine all frames for
    --rounds rounds, each round attending to every frame of the round before. Shows progress per frame and per
    round and saves OUT/round-RR/frame-FFF.png as frames arrive. Options override the file's fields."""
    from api.client import StudioClient, StudioError

    body = _story_file(file)
    options = {"rounds": rounds, "seed": seed, "style": style, "preset": preset, "steps": steps}
    body.update({name: value for name, value in options.items() if value is not None})
    if size is not None:
        body["height"], body["width"] = _canvas(size, 0, 0)
    with StudioClient(url, api_key=api_key) as client:
        try:
            created = client.create_story(body.pop("prompts"), **body)
        except (StudioError, ValueError) as exc:
            raise typer.BadParameter(str(exc), param_hint="FILE") from exc
        n = created.frame_count
        console.print(f"story {created.id}: {n} frames × {created.round_count} rounds (seed {created.seed})")
        with _progress() as progress:
            overall = progress.add_task("story", total=created.frames_total)
            this_round = progress.add_task("round 0", total=n)
            for event in client.story_events(created.id):
                if event.type == "frame":
                    folder = out / f"round-{event.data['round']:02d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    picture = client.get_image(event.data["image_id"])
                    (folder / f"frame-{event.data['index']:03d}.png").write_bytes(picture)
                    progress.advance(overall)
                    progress.advance(this_round)
                elif event.type == "round":
                    console.print(f"round {event.data['round']} done")
                    progress.reset(this_round, total=n, description=f"round {event.data['round'] + 1}")
        final = client.get_story(created.id)
    if final.status != "done":
        console.print(f"[red]story {final.id} {final.status}: {final.error}[/red]")
        raise typer.Exit(1)
    console.print(f"story {final.id} done: {final.frames_done} frames saved in {out.resolve()}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where images, data and summary.json go")] = Path("demo-output"),
    steps: Annotated[int, typer.Option(help="denoising steps per turn")] = 10,
    size: Annotated[
        int | None,
        typer.Option(help="canvas side in pixels (multiple of 8); default by preset: 512 for tiny/sd15, 1024 for SDXL"),
    ] = None,
    preset: Annotated[str | None, typer.Option(help="model preset (default from settings: tiny)")] = None,
    turns: Annotated[int, typer.Option(help="how many turns of the scripted dialogue to run")] = len(DEMO_DIALOGUE),
    mechanisms: Annotated[str | None, typer.Option(help=MECHANISMS_HELP)] = None,
) -> None:
    """Start the real service on loopback and drive a multi-turn dialogue through it with the SDK.

    Offline by default: tiny random-weight models and the rule-based planner (set STUDIO_LLM__BASE_URL
    and a preset with real weights for the real thing). Leaves images and summary.json in OUT."""
    from api.client import StudioClient
    from entrypoints.server import BackgroundServer, free_port

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    summary: dict[str, Any] = {"steps": steps, "turns": []}
    with _written_on_exit(summary, out / "summary.json", started):
        base = Settings()
        settings = base.model_copy(
            update={
                "data_dir": out / "data",
                "database_url": base.database_url,
                "host": "127.0.0.1",
                "port": free_port(),
            }
        )
        preset_name = preset or settings.default_preset
        kind = settings.preset(preset_name).kind
        # the native canvas of the architecture (the tiny presets are shaped like SD1.5 and SDXL)
        size = size or {"tiny": 512, "sd15": 512}.get(kind, 1024)
        chosen = {"mechanisms": parse_mechanisms(mechanisms)} if mechanisms is not None else {}
        draw = DrawSettings(preset=preset_name, steps=steps, seed=1234, **chosen)  # step counts follow `steps`
        summary.update(preset=preset_name, size=size)
        key = _database(settings).create_key("demo", "studio demo")
        with BackgroundServer(settings) as server, StudioClient(server.url, api_key=key) as client:
            console.print(f"service at {server.url} (data in {settings.data_dir})")
            session = client.create_session(title="demo", height=size, width=size, settings=draw)
            summary["session_id"] = session.id
            for message in DEMO_DIALOGUE[:turns]:
                summary["turns"].append(_demo_turn(client, session.id, message, out, summary))
            subjects = client.list_subjects(session.id)
            summary["subjects"] = [s.model_dump(mode="json") for s in subjects]
            summary["contact_sheet"] = str(_write_contact_sheet(client, session.id, out))
            console.print(f"contact sheet: {summary['contact_sheet']}")
    console.print(f"[green]done in {summary['seconds']} s[/green]: {out / 'summary.json'}")


def _demo_turn(client: StudioClient, session_id: str, message: str, out: Path, summary: dict[str, Any]) -> dict:
    """Run one turn of the demo dialogue; its summary entry. A failed turn is recorded in `summary` (entry,
    status, error) before the command exits with status 1."""
    from api.client import TurnFailedError

    console.print(f"[bold cyan]user>[/bold cyan] {message}")
    try:
        with _progress() as progress:
            turn = _follow(client, client.post_turn(session_id, message=message), progress)
    except TurnFailedError as exc:
        failed = exc.turn
        console.print(f"[red]turn {failed.index} failed: {failed.error}[/red]")
        summary["turns"].append(
            {
                "index": failed.index,
                "message": message,
                "status": failed.status,
                "error": failed.error,
                "info": failed.info,
            }
        )
        summary.update(status="failed", error=f"turn {failed.index} failed: {failed.error}")
        raise typer.Exit(1) from exc
    console.print(_plan_table(turn))
    return {
        "index": turn.index,
        "message": message,
        "status": turn.status,
        "plan": turn.plan.model_dump(mode="json") if turn.plan else None,
        "images": _save_turn(client, turn, out),
        "subjects_found": {c.subject_id: c.found for c in turn.crops},
        "timings": turn.timings,
    }


@contextmanager
def _written_on_exit(summary: dict[str, Any], path: Path, started: float) -> Iterator[None]:
    """Write `summary` to `path` however the block ends, with its `status`: done, failed (set by the block
    before it exits), interrupted (Ctrl-C) or error (any exception, whose text goes to `error`)."""
    try:
        yield
        summary.setdefault("status", "done")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            summary.setdefault("status", "interrupted")
        elif not isinstance(exc, typer.Exit):
            summary.setdefault("status", "error")
            summary.setdefault("error", f"{type(exc).__name__}: {exc}")
        summary.setdefault("status", "failed")
        raise
    finally:
        summary["seconds"] = round(time.perf_counter() - started, 2)
        path.write_text(json.dumps(summary, indent=2))


@app.command()
def worker(
    preset: Annotated[str, typer.Option(help="the model preset this worker holds; it takes that preset's queue")],
    device: Annotated[str | None, typer.Option(help="e.g. cuda:0 (default: the preset's device)")] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level")] = "INFO",
) -> None:
    """Run one drawer worker (one per GPU): loads PRESET's models once and draws the jobs of its queue on the
    Celery broker (`STUDIO_DRAWER__BROKER_URL`). SIGTERM finishes the current job, then stops."""
    from workers.worker import run_worker

    run_worker(Settings(), preset, device=device, loglevel=loglevel)


@app.command()
def status(
    json_output: Annotated[bool, typer.Option("--json", help="print the snapshot as JSON")] = False,
) -> None:
    """The drawer pool: live workers per preset (from their heartbeats), jobs in flight, queue depths."""
    from workers.jobs import redis_client
    from workers.pool import PoolRecords

    settings = Settings()
    records = PoolRecords(
        redis_client(settings.drawer.broker_url, settings.drawer.connect_timeout_s), settings.drawer.prefix
    )
    snapshot = records.snapshot(sorted(settings.presets))
    if json_output:
        typer.echo(json.dumps(snapshot))
        return
    console.print(f"drawer backend: {settings.drawer.backend}, broker prefix {settings.drawer.prefix!r}")
    table = Table("preset", "workers", "in flight", "queued", title="drawer pool")
    for name, row in snapshot["presets"].items():
        table.add_row(name, str(row["workers"]), str(row["in_flight"]), str(row["queued"]))
    console.print(table)
    workers_table = Table("worker", "preset", "device", "pid", "current job", "jobs done", "last beat (s ago)")
    for beat in snapshot["workers"]:
        workers_table.add_row(
            beat["name"], beat["preset"], beat["device"], str(beat["pid"]), beat["current_job"] or "-",
            str(beat["jobs_done"]), f"{beat['age_s']:.1f}",
        )
    console.print(workers_table)


def _mount_bench() -> None:
    try:
        from evaluation.cli import bench_app
    except ImportError:
        return
    app.add_typer(bench_app, name="bench", help="CMIGBench runner and metrics.")


_mount_bench()


def _mount_consistory() -> None:
    from entrypoints.consistory import consistory

    app.command("consistory")(consistory)


_mount_consistory()

if __name__ == "__main__":
    app()
