"""The turn service: the one door to turns, sessions and references. It accepts turns (queue cap and
idempotency enforced atomically by the database), runs them strictly in order per session and round-robin
across sessions on worker threads, stores their results (image files first, then the records) and
publishes their events. It never builds URLs: it stores and emits image ids; api/ adds the URLs.

Several processes may serve one database (docs/operations.md): a process drives a turn only while it holds
the turn's lease, renewed by a ticker thread while the turn runs, and takes a session's turns one at a time in
order. The same ticker finds claimable turns (new ones, or those of a process that died: its leases expire)
every `scaleout.poll_seconds`; on PostgreSQL the other processes' new turns also wake it (studio/notify.py).
The engine continues a taken-over turn from its checkpoint. A cancel is stored on the turn, so whichever
process drives or resumes a cancelled turn ends it instead of running it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from studio.cancellation import StoredCancel
from studio.draw import DrawSettings
from studio.events import EventBus, EventNotice
from studio.failures import DrawCancelled, TurnFailure, clip_reason
from studio.fast_mode import PreviewImage, StepReporter, fast_mode_problem
from studio.images import encode_png, sniff_upload
from studio.leases import Ticker, lease_owner_id
from studio.notify import PostgresListener
from studio.plan import TurnPlan, canvas_side_problem
from studio.protocols import HistoryEntry, TurnContext, TurnEngine
from studio.reference_memory import uploaded_subject
from studio.rejections import IdempotencyKeyReused, QueueFull, RequestRejected, SessionGone
from studio.round_robin import RoundRobin
from studio.settings import Settings
from studio.storage.database import ANCHOR_CACHE, Database
from studio.storage.images import FileImageStore
from studio.subjects import Subject, next_mother_id, parent_of, validate_subject_id
from studio.turns import CropView, EventType, Session, Turn, TurnEvent, TurnRequest, TurnStatus

if TYPE_CHECKING:
    from studio.story_runner import StoryRunner

__all__ = ["IdempotencyKeyReused", "QueueFull", "RequestRejected", "SessionGone", "TurnService"]

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
"""How often a running turn reads its stored cancel flag (a cancel or delete made by another process)."""


class TurnService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        images: FileImageStore,
        engine: TurnEngine,
        cancel_poll_seconds: float = CANCEL_POLL_SECONDS,
    ) -> None:
        self.settings = settings
        self.db = db
        self.images = images
        self.engine = engine
        self.bus = EventBus()
        self._pool = ThreadPoolExecutor(max_workers=settings.worker_threads, thread_name_prefix="turn-worker")
        self._cancel_poll_seconds = cancel_poll_seconds
        self.cancel_poll_seconds = cancel_poll_seconds
        self.stories: StoryRunner | None = None
        """The long-story runner (studio/story_runner.py), set by the composition root; it shares the pool."""
        self._lock = threading.Lock()
        self._sessions = RoundRobin(
            self._lock,
            lambda: self._closed,
            self.run_in_pool,
            self._serve,
            again=lambda session_id, ran: ran or session_id in self.db.claimable_sessions([session_id]),
            what="session",
        )
        """Sessions with a task in the pool (waiting or running): at most one each, so turns stay ordered."""
        self._running: dict[str, tuple[str, StoredCancel]] = {}
        """Turn id → (session id, cancel signal) of the turns running in this process."""
        self._lost: set[str] = set()
        """Running turns whose lease another process took (this process stalled past its lease)."""
        self._emit_lock = threading.Lock()
        self._closed = False
        self._started = False
        self.owner = lease_owner_id()
        """This instance's name on the leases it holds and on the event notices it sends."""
        scaleout = settings.scaleout
        self._lease_seconds = scaleout.lease_seconds
        self._ticker = Ticker(min(scaleout.poll_seconds, scaleout.lease_seconds / 3), self._tick, "turn-leases")
        self.listener = (
            None
            if db.is_sqlite
            else PostgresListener(db.url, self.owner, self._on_notice, on_connect=lambda: self.bus.wake())
        )
        self.admission_checks: list[Callable[[], None]] = []
        """Called before a turn is stored; one raises BackendUnavailable when a backend the turn needs is away
        (e.g. the drawer pool's broker), so nothing is written (see entrypoints/runtime.py)."""

    # --- lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Take up the claimable turns (those a previous process left unfinished included), then keep
        looking for more and renewing the leases of the running turns. Starting twice is one start."""
        with self._lock:
            if self._started:
                return
            self._started = True
        self._find_work()
        if self.stories is not None:
            self.stories.start()
        self._ticker.start()
        if self.listener is not None:
            self.listener.start()

    def close(self, wait: bool = True) -> None:
        """Stop taking work; running turns stop between two steps and stay unfinished, their leases given
        up, to be resumed by another or the next process (the engine continues from its checkpoint)."""
        with self._lock:
            self._closed = True
            for _, cancel in self._running.values():
                cancel.set()
        if self.stories is not None:
            self.stories.close()
        self._ticker.stop()
        if self.listener is not None:
            self.listener.stop()
        self._pool.shutdown(wait=wait, cancel_futures=True)

    def run_in_pool(self, task: Callable[[], None]) -> bool:
        """Queue a task (a story's next frame) on the worker pool behind every waiting session; False when the
        pool is shut down."""
        try:
            self._pool.submit(task)
        except RuntimeError:
            return False
        return True

    def driven_turns(self) -> int:
        """How many turns this process drives now (for /metrics)."""
        with self._lock:
            return len(self._running)

    def _tick(self) -> None:
        self._renew_leases()
        self._find_work()
        if self.stories is not None:
            self.stories.start()  # stories whose lease ran out (their process died) are taken over here too

    def _find_work(self) -> None:
        for session_id in self.db.claimable_sessions():
            self._schedule(session_id)

    def _renew_leases(self) -> None:
        """Renew the leases of the turns running here; a turn whose lease was lost (another process took it
        after this one stalled past the lease) is stopped here without recording anything."""
        with self._lock:
            running = list(self._running)
        held = self.db.renew_leases(self.owner, running, self._lease_seconds)
        for turn_id in set(running) - held:
            with self._lock:
                entry = self._running.get(turn_id)
                if entry is None:
                    continue  # finished meanwhile
                self._lost.add(turn_id)
            log.warning("turn %s: lease lost to another process; stopping it here", turn_id)
            entry[1].set()

    def _on_notice(self, notice: EventNotice) -> None:
        """Another process stored an event: wake this process's streams of the session; a new turn there
        may be one this process can take."""
        self.bus.wake(notice.session_id)
        if notice.type == "queued":
            self._schedule(notice.session_id)

    # --- requests -------------------------------------------------------------------------------------

    def create_session(self, tenant: str, title: str, height: int, width: int, settings: DrawSettings) -> Session:
        self.check_canvas(height, width, settings.preset)
        self.check_style_reference(tenant, settings)
        self.check_mode(settings)
        return self.db.create_session(tenant, title, height, width, settings)

    def check_style_reference(self, tenant: str, settings: DrawSettings) -> None:
        """The style reference must name an image the tenant holds (docs/reference_controls.md)."""
        image_id = settings.style_reference.image_id
        preset = self.settings.presets.get(settings.preset)
        if image_id is not None and preset is not None and preset.kind == "msdiffusion":
            raise RequestRejected(
                "settings.style_reference.image_id: an MS-Diffusion preset has no plain IP-Adapter to serve a style "
                f"reference (preset {settings.preset!r}; docs/msdiffusion.md)"
            )
        if image_id is not None and not self.db.image_visible_to(image_id, tenant):
            raise RequestRejected(f"settings.style_reference.image_id: image {image_id!r} not found")

    def upload_style_reference(self, session: Session, data: bytes, scale: float | None = None) -> Session:
        """Store an uploaded style image and make it the session's style reference (its settings' default for
        every later turn; a turn's own settings still override it)."""
        image = sniff_upload(data, self.settings.max_upload_bytes, self.settings.max_upload_pixels)
        image_id = self.images.put(encode_png(image))
        style = session.settings.style_reference.model_copy(update={"image_id": image_id})
        if scale is not None:
            style = style.model_copy(update={"scale": scale})
        settings = session.settings.model_copy(update={"style_reference": style})
        if not self.db.set_session_settings(session.id, session.tenant, settings, image_id):
            self._delete_files(self.db.unreferenced_images({image_id}))
            raise SessionGone(f"session {session.id} not found")
        return session.model_copy(update={"settings": settings})

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

    def check_mode(self, settings: DrawSettings) -> None:
        """Fast mode and previews need the preset's few-step weights and preview autoencoder."""
        try:
            preset = self.settings.preset(settings.preset)
        except KeyError as exc:
            raise RequestRejected(str(exc.args[0])) from exc
        problem = fast_mode_problem(settings, preset, settings.preset)
        if problem is not None:
            raise RequestRejected(problem)

    def check_plan(self, plan: TurnPlan, preset_name: str) -> None:
        self.check_canvas(plan.height, plan.width, preset_name)
        if len(plan.items) > self.settings.max_subjects:
            raise RequestRejected(f"a turn may place at most {self.settings.max_subjects} subjects")

    def submit_turn(self, session: Session, request: TurnRequest, idempotency_key: str | None = None) -> Turn:
        """Queue a turn. The same `idempotency_key` with the same request returns the first turn (nothing is
        queued twice); with a different request it raises IdempotencyKeyReused. QueueFull when the session
        already holds `max_queued_turns` unfinished turns; both checks are atomic with the insert."""
        for check in self.admission_checks:
            check()
        settings = request.settings or session.settings
        if request.settings is not None:
            self.check_canvas(session.height, session.width, settings.preset)
            self.check_style_reference(session.tenant, settings)
            self.check_mode(settings)
        if request.plan is not None:
            self.check_plan(request.plan, settings.preset)
            if request.plan.edit is not None and not any(
                t.status == TurnStatus.DONE for t in self.db.list_turns(session.id)
            ):
                raise RequestRejected("an editing plan needs an earlier finished turn whose image it keeps")
        turn, created = self.db.create_turn(
            session.id, request, idempotency_key, max_unfinished=self.settings.max_queued_turns
        )
        if created:
            self._emit(turn, "queued", {})
            self._schedule(session.id)
        return turn

    def cancel_turn(self, turn: Turn) -> bool:
        """Ask a queued or running turn to stop; it ends `failed` with reason "cancelled" (a running drawer
        stops between two steps). The cancel is stored on the turn: a turn running in another process sees
        it at its next step, and a process that resumes the turn after a restart ends it without running it.
        Returns False when the turn had already finished."""
        if turn.status.finished or not self.db.request_cancel(turn.id):
            return False
        with self._lock:
            running = self._running.get(turn.id)
        if running is not None:
            running[1].set()
        return True

    def delete_session(self, session: Session) -> None:
        """Delete the session's records and events, its image files that no other session references, and
        the engine's checkpoints of its thread. A turn of the session still running stops at its next step
        (in any process: its row is gone) and records nothing."""
        orphans = self.db.delete_session(session.id)  # its anchor caches too (image rows of kind anchor_cache)
        with self._lock:
            running = [cancel for session_id, cancel in self._running.values() if session_id == session.id]
        for cancel in running:
            cancel.set()
        self._delete_files(orphans)
        self.engine.forget(session.id)

    def branch_session(self, session: Session, turn_index: int, title: str | None = None) -> Session:
        """A new session that shares `session`'s history up to turn `turn_index` (0: a fresh session with the
        same canvas and settings): its turns 1..turn_index (copied records, shared image files), the subject
        memory as it was after that turn, and the engine's conversation state at the end of that turn.

        LookupError when the session has no such turn; BranchConflict (HTTP 409) when the turn is not done or
        its memory was not kept; SessionGone when the session was deleted meanwhile."""
        child = self.db.branch_session(session.id, turn_index, title)
        if turn_index > 0:
            try:
                self.engine.branch(session.id, turn_index, child.id)
            except Exception:
                self.delete_session(child)
                raise
        return child

    def upload_reference(
        self,
        session: Session,
        name: str,
        data: bytes,
        description: str = "",
        subject_id: str | None = None,
        add: bool = False,
    ) -> Subject:
        """Validate an uploaded image (ImageRejected carries the HTTP status), store it as PNG and make it the
        reference of `subject_id`, or of the subject of that name, or of a new subject. A crop of a drawn
        image never replaces it. With `add` the image joins the subject's references instead
        (docs/reference_controls.md)."""
        image = sniff_upload(data, self.settings.max_upload_bytes, self.settings.max_upload_pixels)
        memory = self.db.list_subjects(session.id)
        target = upload_target(memory, name, subject_id)
        image_id = self.images.put(encode_png(image))
        existing = next((s for s in memory if s.id == target), None)
        try:
            subject = uploaded_subject(existing, target, name, description, image_id, add)
        except RequestRejected:
            self._delete_files(self.db.unreferenced_images({image_id}))
            raise
        if not self.db.put_subject(session.id, session.tenant, subject, image_id):
            self._delete_files(self.db.unreferenced_images({image_id}))
            raise SessionGone(f"session {session.id} not found")
        self._delete_files(self.db.prune_anchor_caches(session.id))
        return subject

    def rename_subject(
        self,
        session: Session,
        subject_id: str,
        name: str | None = None,
        description: str | None = None,
        controls: dict[str, Any] | None = None,
    ) -> Subject | None:
        """Change a subject's name and/or description (and the reference controls in `controls`, None clearing
        one), keeping its reference and history. None when the session has no such subject."""
        existing = next((s for s in self.db.list_subjects(session.id) if s.id == subject_id), None)
        if existing is None:
            return None
        changes: dict[str, Any] = {
            key: value for key, value in (("name", name), ("description", description)) if value is not None
        }
        if any(getattr(existing, key) != value for key, value in changes.items()):
            changes["anchor_cache_id"] = None  # another subject now (its tokens, its look): its cache is stale
        changes.update(controls or {})
        subject = existing.model_copy(update=changes)
        if not self.db.put_subject(session.id, session.tenant, subject, None):
            raise SessionGone(f"session {session.id} not found")
        self._delete_files(self.db.prune_anchor_caches(session.id))
        return subject

    def _delete_files(self, image_ids: list[str]) -> None:
        for image_id in image_ids:
            self.images.delete(image_id)

    # --- scheduling: round-robin across sessions, one turn at a time per session -----------------------

    def _schedule(self, session_id: str) -> None:
        self._sessions.schedule(session_id)

    def _serve(self, session_id: str) -> bool | None:
        """Claim and run the session's next unfinished turn; the session then queues again at the back
        (studio/round_robin.py) while it has turns: with more sessions than workers, each session with work gets
        one turn per round (a session's turns still run strictly in order, never two at once, in one process at a
        time: the claim is refused while another process holds a lease on the session)."""
        turn = None
        try:
            if not self._closed:
                turn = self.db.claim_next_turn(session_id, self.owner, self._lease_seconds)
            if turn is not None:
                self._run(turn)
        except Exception:
            # not even the failure could be recorded (e.g. the database is unreachable): stop rather than
            # spin; a later submit or a restart picks the session up again
            log.exception("session %s: turn %s could not be finished", session_id, turn.id if turn else None)
            return None
        return turn is not None

    # --- one turn -------------------------------------------------------------------------------------

    def _run(self, turn: Turn) -> None:
        session = self.db.get_session(turn.session_id)
        if session is None:
            return
        cancel = StoredCancel(lambda: self.db.cancel_requested(turn.id), self._cancel_poll_seconds)
        with self._lock:
            if self._closed:
                cancel.set()
            self._running[turn.id] = (turn.session_id, cancel)
        started = time.perf_counter()
        try:
            if cancel.is_set():
                raise DrawCancelled
            ctx = self._context(session, turn)
            # the engine announces its stages ("planning", "drawing"); the turn's status follows them
            status_of = {"planning": TurnStatus.PLANNING, "drawing": TurnStatus.DRAWING}

            def emit(event_type: EventType, data: dict[str, Any]) -> None:
                if event_type in status_of:
                    # before each stage the stored cancel is read afresh (a cancel made in any process)
                    if cancel.is_set() or self.db.cancel_requested(turn.id):
                        raise DrawCancelled
                    self.db.set_turn_status(turn.id, status_of[event_type], owner=self.owner)
                self._emit(turn, event_type, data)

            def step(number: int, total: int) -> None:
                self._emit(turn, "step", {"step": number, "total": total})

            def preview(image: PreviewImage) -> None:
                self._emit(turn, "preview", image.event_data())

            on_step = StepReporter(step, preview)  # a step callback that also takes live previews

            outcome = self.engine.run_turn(ctx, emit, on_step=on_step, cancel=cancel)
            self._store(session, turn, outcome, time.perf_counter() - started)
        except TurnFailure as exc:
            # an expected failure (bad reference, LLM gave up, plan the model cannot draw): no stack trace
            log.info("turn %s failed: %s", turn.id, exc.reason)
            self._fail(turn, exc.reason, info=exc.info)
        except DrawCancelled:
            if turn.id in self._lost:
                return  # another process drives the turn now and records it
            if self._closed:
                # shutting down: the turn stays unfinished; another process (or the next start) resumes it
                self.db.release_lease(turn.id, self.owner)
                return
            self._fail(turn, "cancelled")
        except Exception as exc:  # a failing turn must leave the session usable
            log.exception("turn %s failed", turn.id)
            self._fail(turn, clip_reason(f"internal error: {type(exc).__name__}: {exc}"))
        finally:
            with self._lock:
                self._running.pop(turn.id, None)
                self._lost.discard(turn.id)
            if self.db.get_session(turn.session_id) is None:
                # deleted while the turn ran: drop the checkpoints the run wrote after the delete
                self.engine.forget(turn.session_id)

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
                    crop_image_id=crop_id,
                )
            )
        memory: list[Subject] = outcome.subjects
        for subject in memory:
            if subject.reference_image_id:
                image_ids.setdefault(subject.reference_image_id, "reference")
            if subject.anchor_cache_id:
                image_ids.setdefault(subject.anchor_cache_id, ANCHOR_CACHE)
        timings = {**result.timings, "turn_total": round(seconds, 4)}
        final_id = next(iter(image_ids))
        if not self.db.finish_turn(
            turn,
            session.tenant,
            outcome.plan,
            final_id,
            debug_id,
            crops,
            timings,
            outcome.info,
            memory,
            image_ids,
            owner=self.owner,
        ):
            if self.db.get_session(turn.session_id) is None:
                # the session was deleted while the turn ran: drop the files nothing references
                self._delete_files(self.db.unreferenced_images(set(image_ids)))
            # else another process took the turn over (this one stalled past its lease) and records it
            return
        self._delete_files(self.db.prune_anchor_caches(session.id))  # the caches this turn's memory replaced
        self._emit(turn, "done", {"image_id": final_id, "timings": timings})

    def _fail(self, turn: Turn, reason: str, info: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {"error": reason}
        if info:
            fields["info"] = info
        if self.db.set_turn_status(turn.id, TurnStatus.FAILED, owner=self.owner, **fields):
            self._emit(turn, "failed", {"reason": reason})

    def _emit(self, turn: Turn, event_type: EventType, data: dict[str, Any]) -> None:
        event = TurnEvent(
            type=event_type, session_id=turn.session_id, turn_id=turn.id, turn_index=turn.index, data=data
        )
        # numbering (by the database) and publishing under one lock: this process's listeners get its events
        # in sequence order, so a stream takes them as handed over; a gap (events stored by another process)
        # makes it read the database instead
        with self._emit_lock:
            stored = self.db.append_event(turn.session_id, event, origin=self.owner)
            if stored is not None:  # None: the session was deleted
                self.bus.publish(stored)


def upload_target(memory: list[Subject], name: str, subject_id: str | None) -> str:
    """The subject an upload attaches to: `subject_id` when given (its parent must exist), else the mother
    subject of that name, else a new mother subject."""
    if subject_id is not None:
        try:
            target = validate_subject_id(subject_id)
        except ValueError as exc:
            raise RequestRejected(f"subject_id: {exc}") from exc
        parent = parent_of(target)
        if parent is not None and all(s.id != parent for s in memory):
            raise RequestRejected(f"subject_id: parent {parent!r} is unknown")
        return target
    for subject in memory:
        if subject.name.lower() == name.lower() and not subject.is_component:
            return subject.id
    return next_mother_id({s.id for s in memory})
