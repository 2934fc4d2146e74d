"""Builds the running service from settings: database, image store, models (loaded lazily, once per
preset, on the worker thread that first needs them) and the conversation engine."""

from __future__ import annotations

import threading
from typing import Any

from studio.draw import DrawJob, DrawResult
from studio.protocols import Drawer, StepCallback, SubjectLocator, TurnEngine
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


def build_service(settings: Settings, engine: TurnEngine | None = None, drawer: Any = None) -> TurnService:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url)
    db.migrate()
    images = FileImageStore(settings.data_dir / "images")
    drawer = drawer or PresetDrawer(settings)  # models load on first use
    if engine is None:
        engine = build_engine(settings, drawer, images)
    service = TurnService(settings, db, images, engine)
    service.stories = StoryRunner(service, drawer)
    return service
