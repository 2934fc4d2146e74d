"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import studio
from api import routes_images, routes_sessions, routes_stories, routes_subjects, routes_turns
from api.auth import is_loopback
from api.errors import install_error_handlers
from api.metrics import Metrics, MetricsMiddleware, PoolCollector
from studio.rejections import BackendUnavailable
from studio.service import TurnService
from studio.turns import TurnEvent

MAX_JSON_BODY_BYTES = 256 * 1024
"""Largest request body outside uploads (413 beyond, before any of it is decoded); a maximal valid turn
fits even with every character \\u-escaped. FastAPI decodes JSON on the event loop, so this limit is what
bounds that work: about 3-7 ms at the limit for the costliest shapes. A worker thread would not shorten the
stall, since `json.loads` holds the GIL throughout (see docs/api.md)."""


STUDIO_WEB = Path(__file__).parent / "studio_web"
"""The browser studio: static ES modules, no build step (see docs/studio.md)."""


class UnsafeConfiguration(RuntimeError):
    pass


def create_app(service: TurnService) -> FastAPI:
    """Build the app around a built service (see `entrypoints.runtime.build_service`); api/ never wires
    models itself."""
    settings = service.settings
    if not settings.auth.enabled and not is_loopback(settings.host):
        raise UnsafeConfiguration(
            f"auth may be switched off only when the server binds to loopback, not {settings.host!r}"
        )
    metrics = Metrics(pool=_pool_collector(service))

    def count_finished(event: TurnEvent) -> None:
        if event.type in ("done", "failed"):
            metrics.turns.labels(event.type).inc()
            if event.type == "done":
                metrics.turn_seconds.observe(event.data.get("timings", {}).get("turn_total", 0.0))

    service.bus.subscribe_all(count_finished)
    metrics.turns_driven.set_function(service.driven_turns)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        service.close(wait=False)

    app = FastAPI(
        title="AutoStudio service",
        version=studio.__version__,
        description="Multi-turn, subject-consistent image generation.",
        lifespan=lifespan,
        max_body_size=MAX_JSON_BODY_BYTES,
    )
    install_error_handlers(app)
    app.state.service = service
    app.state.metrics = metrics
    for module in (routes_sessions, routes_turns, routes_subjects, routes_images, routes_stories):
        app.include_router(module.router)
    app.include_router(routes_subjects.style_router)

    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.exception_handler(BackendUnavailable)
    def backend_unavailable(_: Request, exc: BackendUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok", "version": studio.__version__}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # mounted last: every route above (/v1, /docs, /openapi.json, /healthz, /metrics) matches first
    app.mount("/", StaticFiles(directory=STUDIO_WEB, html=True), name="studio")
    return app


def _pool_collector(service: TurnService) -> PoolCollector | None:
    """The drawer pool's metrics when turns are drawn by `studio worker` processes."""
    pool = service.settings.drawer
    if pool.backend != "celery":
        return None
    from workers.jobs import redis_client
    from workers.pool import PoolRecords

    records = PoolRecords(redis_client(pool.broker_url, pool.connect_timeout_s), pool.prefix)
    return PoolCollector(records, sorted(service.settings.presets))
