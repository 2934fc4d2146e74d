"""Running the real HTTP service in a background thread (for the demo and tests)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

from studio.settings import Settings


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class BackgroundServer:
    """uvicorn serving `api.app.create_app(build_service(settings))` on a thread; a context manager."""

    def __init__(self, settings: Settings, app: object | None = None) -> None:
        import uvicorn

        from api.app import create_app
        from entrypoints.runtime import build_service

        self.settings = settings
        self.app = app or create_app(build_service(settings))
        config = uvicorn.Config(self.app, host=settings.host, port=settings.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="studio-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
