"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class Metrics:
    def __init__(self) -> None:
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
