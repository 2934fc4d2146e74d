"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from workers.pool import PoolRecords


log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, pool: Collector | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "studio_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "studio_http_request_seconds", "HTTP request latency", ["method", "route"], registry=self.registry
        )
        self.turns = Counter("studio_turns_total", "turns by final status", ["status"], registry=self.registry)
        self.turn_seconds = Histogram(
            "studio_turn_seconds",
            "wall time of finished turns",
            buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
            registry=self.registry,
        )
        self.turns_driven = Gauge(
            "studio_turns_driven", "turns this API process drives now (holds the lease of)", registry=self.registry
        )
        if pool is not None:
            self.registry.register(pool)


class PoolCollector(Collector):
    """The drawer pool read from Redis at each scrape: live workers, jobs in flight and queue depth per preset,
    seconds since each worker's heartbeat, job durations (queue wait and drawing) per preset."""

    def __init__(self, records: PoolRecords, presets: list[str]) -> None:
        self.records = records
        self.presets = presets

    def collect(self) -> Iterator[Metric]:
        from workers.pool import STAGES

        up = GaugeMetricFamily("studio_pool_up", "1 when the drawer pool's Redis answered this scrape")
        try:
            snapshot = self.records.snapshot(self.presets)
            histograms = {(p, s): self.records.histogram(p, s) for p in snapshot["presets"] for s in STAGES}
        except Exception as exc:  # the scrape still answers, saying the pool is unreadable
            log.warning("drawer pool unreadable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        gauges = {
            "workers": GaugeMetricFamily("studio_pool_workers", "live drawer workers", labels=["preset"]),
            "in_flight": GaugeMetricFamily("studio_pool_jobs_in_flight", "jobs being drawn", labels=["preset"]),
            "queued": GaugeMetricFamily("studio_pool_queue_depth", "jobs waiting in the queue", labels=["preset"]),
        }
        for preset, row in snapshot["presets"].items():
            for field, gauge in gauges.items():
                gauge.add_metric([preset], row[field])
        yield from gauges.values()
        age = GaugeMetricFamily(
            "studio_worker_heartbeat_age_seconds", "seconds since a worker's heartbeat", labels=["worker", "preset"]
        )
        for beat in snapshot["workers"]:
            age.add_metric([beat["name"], beat["preset"]], beat["age_s"])
        yield age
        durations = HistogramMetricFamily(
            "studio_job_seconds", "drawer job durations (stage: queue wait, draw)", labels=["preset", "stage"]
        )
        for (preset, stage), (buckets, _, total) in histograms.items():
            durations.add_metric([preset, stage], buckets, total)
        yield durations


class MetricsMiddleware:
    """Counts requests and their latency per route template (plain ASGI: no per-request task overhead)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status[0])).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
