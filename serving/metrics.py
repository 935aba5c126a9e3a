"""Prometheus metrics of the shim, in one registry per app, and the ASGI middleware timing requests.

Fallback rate: ``rate(pulse_serving_recommendations_total{source="popularity"}[5m]) /
rate(pulse_serving_recommendations_total[5m])``.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request latency, recommendation sources, decisions, impressions and errors by reason."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.latency = Histogram("pulse_serving_request_duration_seconds", "HTTP request latency",
                                 ["method", "route", "status"], buckets=_BUCKETS, registry=r)
        self.recommendations = Counter("pulse_serving_recommendations_total", "Recommendation responses by source",
                                       ["source", "degraded"], registry=r)
        self.decisions = Counter("pulse_serving_decisions_total", "Decisions by variant and policy",
                                 ["variant", "policy"], registry=r)
        self.impressions = Counter("pulse_serving_impressions_total", "Impression events by delivery outcome",
                                   ["outcome"], registry=r)
        self.served = Counter("pulse_serving_served_lists_total", "Served-list records (topic_served) by outcome: "
                              "queued, failed, dropped, off", ["outcome"], registry=r)
        self.events = Counter("pulse_serving_events_total", "Collected events by outcome", ["outcome"], registry=r)
        self.errors = Counter("pulse_serving_errors_total", "Error responses by reason", ["reason"], registry=r)
        self.live_prefix = Gauge("pulse_serving_live_prefix", "1 for the Redis prefix (model) this worker reads",
                                 ["prefix"], registry=r)
        self.prefix_switches = Counter("pulse_serving_prefix_switches_total",
                                       "Switches of the live prefix (pulse model promote / rollback)", registry=r)
        # Label children, looked up once: ``labels()`` validates and locks on every call (hot path).
        self._latency_children: dict[tuple[str, str, int], Any] = {}
        self._recommendation_children: dict[tuple[str, bool], Any] = {}
        self._decision_children: dict[tuple[str, str], Any] = {}
        self._impression_children: dict[str, Any] = {}
        self._served_children: dict[str, Any] = {}

    def observe_latency(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request's latency."""
        key = (method, route, status)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.latency.labels(method, route, str(status))
        child.observe(seconds)

    def recommendation(self, source: str, degraded: bool) -> None:
        """Count one recommendations response."""
        key = (source, degraded)
        child = self._recommendation_children.get(key)
        if child is None:
            child = self._recommendation_children[key] = self.recommendations.labels(source, str(degraded).lower())
        child.inc()

    def serving_prefix(self, prefix: str, switched: bool = True) -> None:
        """Count a switch (unless ``switched`` is false) and mark ``prefix`` as the one read now."""
        self.live_prefix.clear()
        self.live_prefix.labels(prefix).set(1)
        if switched:
            self.prefix_switches.inc()

    def decision(self, variant: str, policy: str) -> None:
        """Count one decision."""
        key = (variant, policy)
        child = self._decision_children.get(key)
        if child is None:
            child = self._decision_children[key] = self.decisions.labels(variant, policy)
        child.inc()

    def impression(self, outcome: str) -> None:
        """Count one impression by delivery outcome (called from the Kafka poll thread too)."""
        child = self._impression_children.get(outcome)
        if child is None:
            child = self._impression_children[outcome] = self.impressions.labels(outcome)
        child.inc()

    def served_list(self, outcome: str) -> None:
        """Count one served-list record by delivery outcome (called from the Kafka poll thread too)."""
        child = self._served_children.get(outcome)
        if child is None:
            child = self._served_children[outcome] = self.served.labels(outcome)
        child.inc()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Observes every HTTP request's latency by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            template = scope.get("pulse.route_template") or getattr(route, "path", None) or "unmatched"
            self.metrics.observe_latency(scope["method"], template, status[0], time.perf_counter() - started)
