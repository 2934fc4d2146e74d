"""One API process of the scale-out tests: uvicorn serving the app on a scripted engine, against a shared
PostgreSQL database and data folder (auth off: loopback only).

A turn whose message contains "hold" waits while <data_dir>/hold exists, checking its cancel as a drawer does
between steps; one containing "pause" takes PAUSE_SECONDS more, so turns of several sessions overlap. Each
turn's start and finish is appended to <data_dir>/draws.log as one JSON line {"what", "pid", "session",
"index"} (one write per line, so lines of several processes never interleave).

With SCALEOUT_CHILD_ENGINE=studio the process runs the real service instead (entrypoints.runtime.build_service:
the default graph engine, offline agents, the drawer the STUDIO_DRAWER__* variables choose, e.g. the Celery pool).

Usage: python -m tests.scaleout.api_child <data_dir> <database_url> <port> <lease_seconds>
(bench/bench_api_processes.py sets SCALEOUT_CHILD_PAUSE and SCALEOUT_CHILD_THREADS.)"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import uvicorn

from api.app import create_app
from entrypoints.runtime import build_service
from studio.failures import DrawCancelled
from studio.protocols import EmitEvent, StepCallback, TurnContext, TurnOutcome
from studio.service import TurnService
from studio.settings import Settings
from studio.storage.database import Database
from studio.storage.images import FileImageStore
from tests.api.conftest import ScriptedEngine

POLL_SECONDS = 0.2
PAUSE_SECONDS = float(os.environ.get("SCALEOUT_CHILD_PAUSE", "0.05"))
THREADS = int(os.environ.get("SCALEOUT_CHILD_THREADS", "2"))


class LoggingEngine(ScriptedEngine):
    def __init__(self, images: FileImageStore, data_dir: Path) -> None:
        super().__init__(images)
        self.data_dir = data_dir

    def run_turn(
        self,
        ctx: TurnContext,
        emit: EmitEvent,
        on_step: StepCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> TurnOutcome:
        self._log("start", ctx)
        while "hold" in (ctx.request.message or "") and (self.data_dir / "hold").exists():
            if cancel is not None and cancel.is_set():
                raise DrawCancelled
            time.sleep(0.02)
        if "pause" in (ctx.request.message or ""):
            time.sleep(PAUSE_SECONDS)
        outcome = super().run_turn(ctx, emit, on_step=on_step, cancel=cancel)
        self._log("finish", ctx)
        return outcome

    def _log(self, what: str, ctx: TurnContext) -> None:
        line = json.dumps({"what": what, "pid": os.getpid(), "session": ctx.session_id, "index": ctx.turn_index})
        fd = os.open(self.data_dir / "draws.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def main() -> None:
    data_dir, database_url, port, lease_seconds = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        host="127.0.0.1",
        port=port,
        auth={"enabled": False},
        worker_threads=THREADS,
        scaleout={"lease_seconds": lease_seconds, "poll_seconds": POLL_SECONDS, "event_poll_seconds": 1.0},
    )
    if os.environ.get("SCALEOUT_CHILD_ENGINE") == "studio":
        service = build_service(settings)
    else:
        db = Database(database_url)
        db.migrate()
        images = FileImageStore(data_dir / "images")
        service = TurnService(settings, db, images, LoggingEngine(images, data_dir), cancel_poll_seconds=0.05)
    uvicorn.run(create_app(service), host=settings.host, port=port, log_level="warning")


if __name__ == "__main__":
    main()
