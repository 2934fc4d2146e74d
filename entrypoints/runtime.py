"""Builds the running service from settings: database, image store, models (loaded lazily, once per
preset, on the worker thread that first needs them) and the conversation engine."""

from __future__ import annotations

import threading
from typing import Any

from studio.draw import DrawJob, DrawResult
from studio.protocols import Drawer, EmitEvent, StepCallback, SubjectLocator, TurnContext, TurnEngine, TurnOutcome
from studio.service import TurnService
from studio.settings import Settings
from studio.storage.database import Database
from studio.storage.images import FileImageStore
from studio.story_runner import StoryRunner


class PresetDrawer:
    """A Drawer that routes each job to the model of its `settings.preset`, loading it on first use."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._drawers: dict[str, Drawer] = {}
        self._locator: SubjectLocator | None = None
        self._lock = threading.Lock()

    def locator(self) -> SubjectLocator:
        with self._lock:
            if self._locator is None:
                from vision import load_locator

                self._locator = load_locator(self.settings.vision)
            return self._locator

    def drawer(self, preset_name: str) -> Drawer:
        locator = self.locator()
        with self._lock:
            if preset_name not in self._drawers:
                self._drawers[preset_name] = load_preset_drawer(self.settings, preset_name, locator)
            return self._drawers[preset_name]

    def draw(
        self, job: DrawJob, on_step: StepCallback | None = None, cancel: threading.Event | None = None
    ) -> DrawResult:
        result = self.drawer(job.settings.preset).draw(job, on_step=on_step, cancel=cancel)
        if result.debug_image is not None or not job.plan.items:
            return result
        from studio.images import decode_image
        from vision.debug import draw_debug

        picture = draw_debug(decode_image(result.image), job.plan, result.crops)
        return result.model_copy(update={"debug_image": picture})


def load_preset_drawer(settings: Settings, preset_name: str, locator: SubjectLocator | None = None) -> Drawer:
    """Load one preset's models now, with the settings' subject locator (loaded too unless given) and limits:
    the one way the service and the benchmark runner get a drawer."""
    from studio.library_logs import quiet_known_library_warnings

    quiet_known_library_warnings()  # before the import: importing the drawer imports the processors
    from drawer import load_drawer

    if locator is None:
        from vision import load_locator

        locator = load_locator(settings.vision)
    return load_drawer(settings.preset(preset_name), locator=locator, max_subjects=settings.max_subjects)


def build_engine(settings: Settings, drawer: Drawer, images: FileImageStore) -> TurnEngine:
    from agents import build_engine as build_graph_engine

    return build_graph_engine(settings, drawer, images)


class JobScopedEngine:
    """Runs each turn inside a job scope named by its turn id, so the drawer pool's job ids are stable across
    restarts: a turn resumed after the API process died reads back the picture its worker stored."""

    def __init__(self, engine: TurnEngine) -> None:
        self.engine = engine

    def run_turn(
        self, ctx: TurnContext, emit: EmitEvent, on_step: StepCallback | None = None, cancel: Any = None
    ) -> TurnOutcome:
        from workers.scope import job_scope

        with job_scope(f"turn:{ctx.turn_id}"):
            return self.engine.run_turn(ctx, emit, on_step=on_step, cancel=cancel)

    def forget(self, session_id: str) -> None:
        self.engine.forget(session_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)


def build_drawer(settings: Settings) -> Drawer:
    """The drawer the settings choose: the models in this process (embedded, the default), or the pool of
    `studio worker` processes behind the Celery broker (`drawer.backend = "celery"`)."""
    if settings.drawer.backend == "celery":
        from workers.drawer_client import CeleryDrawer

        return CeleryDrawer(settings.drawer)
    return PresetDrawer(settings)


def build_service(settings: Settings, engine: TurnEngine | None = None, drawer: Any = None) -> TurnService:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    images = FileImageStore(settings.data_dir / "images")
    drawer = drawer or (build_drawer(settings) if engine is None else None)  # models load on first use
    if engine is None:
        engine = build_engine(settings, drawer, images)
    check_reachable = getattr(drawer, "check_reachable", None)
    if check_reachable is not None:
        engine = JobScopedEngine(engine)
    service = TurnService(settings, db, images, engine)
    if check_reachable is not None:
        service.admission_checks.append(check_reachable)
    service.stories = StoryRunner(service, drawer or build_drawer(settings))
    return service
