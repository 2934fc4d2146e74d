"""The turn service: accepts turns, runs them strictly in order per session on worker threads, stores
their results (image files first, then the records) and publishes their events.

On start it resumes every turn left unfinished by a crash; the engine continues from its checkpoint."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from studio.draw import DrawSettings
from studio.events import EventBus
from studio.failures import DrawCancelled, TurnFailure, clip_reason
from studio.plan import TurnPlan, canvas_side_problem
from studio.protocols import HistoryEntry, TurnContext, TurnEngine
from studio.settings import Settings
from studio.storage.database import Database
from studio.storage.images import FileImageStore
from studio.subjects import Subject
from studio.turns import CropView, EventType, Session, Turn, TurnEvent, TurnRequest, TurnStatus

log = logging.getLogger(__name__)


class RequestRejected(ValueError):
    """A request that is well-formed but not acceptable (limits); the API answers 422 with the message."""


class TurnService:
    def __init__(self, settings: Settings, db: Database, images: FileImageStore, engine: TurnEngine) -> None:
        self.settings = settings
        self.db = db
        self.images = images
        self.engine = engine
        self.bus = EventBus()
        self._pool = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="turn-worker")
        self._active: set[str] = set()
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._emit_lock = threading.Lock()
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Resume the sessions whose turns a previous process left unfinished."""
        for session_id in self.db.sessions_with_unfinished_turns():
            self._schedule(session_id)

    def close(self, wait: bool = True) -> None:
        """Stop taking work; running turns stop between two steps and stay unfinished, to be resumed
        by the next process (the engine continues from its checkpoint)."""
        self._closed = True
        for event in list(self._cancel.values()):
            event.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    # --- requests -------------------------------------------------------------------------------------

    def create_session(self, tenant: str, title: str, height: int, width: int, settings: DrawSettings) -> Session:
        self.check_canvas(height, width, settings.preset)
        return self.db.create_session(tenant, title, height, width, settings)

    def check_canvas(self, height: int, width: int, preset_name: str) -> None:
        try:
            preset = self.settings.preset(preset_name)
        except KeyError as exc:
            raise RequestRejected(str(exc.args[0])) from exc
        limit = min(self.settings.max_canvas_side, preset.max_side)
        for side_name, side in (("height", height), ("width", width)):
            problem = canvas_side_problem(side, limit)
            if problem:
                raise RequestRejected(f"{side_name} {side} {problem} (preset {preset_name!r})")

    def check_plan(self, plan: TurnPlan, preset_name: str) -> None:
        self.check_canvas(plan.height, plan.width, preset_name)
        if len(plan.items) > self.settings.max_subjects:
            raise RequestRejected(f"a turn may place at most {self.settings.max_subjects} subjects")

    def submit_turn(self, session: Session, request: TurnRequest, idempotency_key: str | None = None) -> Turn:
        settings = request.settings or session.settings
        if request.settings is not None:
            self.check_canvas(session.height, session.width, settings.preset)
        if request.plan is not None:
            self.check_plan(request.plan, settings.preset)
            if request.plan.edit is not None and not any(
                t.status == TurnStatus.DONE for t in self.db.list_turns(session.id)
            ):
                raise RequestRejected("an editing plan needs an earlier finished turn whose image it keeps")
        turn, created = self.db.create_turn(session.id, request, idempotency_key)
        if created:
            self._emit(turn, "queued", {})
            self._schedule(session.id)
        return turn

    # --- scheduling: one drain loop per session keeps its turns strictly ordered ---------------------

    def _schedule(self, session_id: str) -> None:
        with self._lock:
            if self._closed or session_id in self._active:
                return
            self._active.add(session_id)
        self._pool.submit(self._drain, session_id)

    def _drain(self, session_id: str) -> None:
        try:
            while not self._closed:
                turn = self.db.next_unfinished_turn(session_id)
                if turn is None:
                    with self._lock:
                        # a turn submitted between the query and here would otherwise wait forever
                        if self.db.next_unfinished_turn(session_id) is None:
                            return
                    continue
                try:
                    self._run(turn)
                except Exception:
                    # not even the failure could be recorded (e.g. the session was deleted meanwhile);
                    # stop rather than spin: a later submit or a restart picks the session up again
                    log.exception("turn %s of session %s could not be finished", turn.id, session_id)
                    return
        finally:
            with self._lock:
                self._active.discard(session_id)

    def cancel_turn(self, turn: Turn) -> bool:
        """Ask a queued or running turn to stop; it ends `failed` with reason "cancelled" (a running
        drawer stops between two steps). Returns False when the turn had already finished."""
        if turn.status.finished:
            return False
        self._cancel.setdefault(turn.id, threading.Event()).set()
        return True

    # --- one turn -------------------------------------------------------------------------------------

    def _run(self, turn: Turn) -> None:
        session = self.db.get_session(turn.session_id)
        if session is None:
            return
        cancel = self._cancel.setdefault(turn.id, threading.Event())
        started = time.perf_counter()
        try:
            if cancel.is_set():
                raise DrawCancelled
            ctx = self._context(session, turn)
            # the engine announces its stages ("planning", "drawing"); the turn's status follows them
            status_of = {"planning": TurnStatus.PLANNING, "drawing": TurnStatus.DRAWING}

            def emit(event_type: EventType, data: dict[str, Any]) -> None:
                if event_type in status_of:
                    self.db.set_turn_status(turn.id, status_of[event_type])
                self._emit(turn, event_type, data)

            def on_step(step: int, total: int) -> None:
                self._emit(turn, "step", {"step": step, "total": total})

            outcome = self.engine.run_turn(ctx, emit, on_step=on_step, cancel=cancel)
            self._store(session, turn, outcome, time.perf_counter() - started)
        except TurnFailure as exc:
            # an expected failure (bad reference, LLM gave up, plan the model cannot draw): no stack trace
            log.info("turn %s failed: %s", turn.id, exc.reason)
            self._fail(turn, exc.reason, info=exc.info)
        except DrawCancelled:
            if self._closed:
                return  # shutting down: the turn stays unfinished and resumes on the next start
            self._fail(turn, "cancelled")
        except Exception as exc:  # a failing turn must leave the session usable
            log.exception("turn %s failed", turn.id)
            self._fail(turn, clip_reason(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            self._cancel.pop(turn.id, None)

    def _context(self, session: Session, turn: Turn) -> TurnContext:
        previous = [t for t in self.db.list_turns(session.id) if t.index < turn.index and t.status == TurnStatus.DONE]
        history = [HistoryEntry(turn_index=t.index, message=t.request.message, plan=t.plan) for t in previous]
        return TurnContext(
            session_id=session.id,
            turn_id=turn.id,
            turn_index=turn.index,
            request=turn.request,
            height=session.height,
            width=session.width,
            settings=turn.request.settings or session.settings,
            subjects=self.db.list_subjects(session.id),
            history=history,
            previous_image_id=previous[-1].image_id if previous else None,
        )

    def _store(self, session: Session, turn: Turn, outcome: Any, seconds: float) -> None:
        result = outcome.result
        # files first (atomic, content-addressed), then one transaction for every record pointing to them
        image_ids = {self.images.put(result.image): "final"}
        debug_id = self.images.put(result.debug_image) if result.debug_image else None
        if debug_id:
            image_ids[debug_id] = "debug"
        crops = []
        for subject_id in outcome.plan.subject_ids:
            crop = result.crops.get(subject_id)
            if crop is None:
                crops.append(CropView(subject_id=subject_id, found=False, reason="not located"))
                continue
            crop_id = self.images.put(crop.crop) if crop.crop else None
            if crop_id:
                image_ids.setdefault(crop_id, "crop")
            crops.append(
                CropView(
                    subject_id=subject_id,
                    found=crop.found,
                    reason=crop.reason,
                    score=crop.score,
                    box=crop.box.model_dump() if crop.box else None,
                    crop_url=f"/v1/images/{crop_id}" if crop_id else None,
                )
            )
        memory: list[Subject] = outcome.subjects
        for subject in memory:
            if subject.reference_image_id:
                image_ids.setdefault(subject.reference_image_id, "reference")
        timings = {**result.timings, "turn_total": round(seconds, 4)}
        final_id = next(iter(image_ids))
        self.db.finish_turn(
            turn, session.tenant, outcome.plan, final_id, debug_id, crops, timings, outcome.info, memory, image_ids
        )
        self._emit(
            turn,
            "done",
            {"image_id": final_id, "image_url": f"/v1/images/{final_id}", "timings": timings},
        )

    def _fail(self, turn: Turn, reason: str, info: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {"error": reason}
        if info:
            fields["info"] = info
        self.db.set_turn_status(turn.id, TurnStatus.FAILED, **fields)
        self._emit(turn, "failed", {"reason": reason})

    def _emit(self, turn: Turn, event_type: EventType, data: dict[str, Any]) -> None:
        event = TurnEvent(
            type=event_type, session_id=turn.session_id, turn_id=turn.id, turn_index=turn.index, data=data
        )
        # numbering and publishing under one lock: live listeners see events in sequence order, so a stream
        # that skips what it has already sent never skips an event it has not
        with self._emit_lock:
            self.bus.publish(self.db.append_event(turn.session_id, event))
