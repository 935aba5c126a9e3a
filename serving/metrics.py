"""Prometheus metrics of the shim, in one registry per app, and the ASGI middleware timing requests.

Fallback rate: ``rate(pulse_serving_recommendations_total{source="popularity"}[5m]) /
rate(pulse_serving_recommendations_total[5m])``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

#: Observations held before they are applied in one loop (and at every render).
_PENDING_MAX = 512
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Request latency, recommendation sources, decisions, impressions and errors by reason.

    The hot routes' latencies and counts (:meth:`observe_latency`, :meth:`recommendation`,
    :meth:`decision`) are queued and applied ``_PENDING_MAX`` at a time and before every
    :meth:`render`: a histogram's ``observe`` (a lock, the bucket search, two locked adds) run cold on
    each paced request cost ~4x its warm time, ~6 us of a decision's ~110 us (bench/serving.py); in a
    loop it runs warm. A scrape always sees every request answered before it.
    """

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
        # (observe or inc of a label child, its argument); a deque: render may run on another thread.
        self._pending: deque[tuple[Callable[[float], None], float]] = deque()

    def _queue(self, apply: Callable[[float], None], amount: float) -> None:
        pending = self._pending
        pending.append((apply, amount))
        if len(pending) >= _PENDING_MAX:
            self.apply_pending()

    def apply_pending(self) -> None:
        """Apply the queued observations and counts (render does it first)."""
        pending = self._pending
        while True:
            try:
                apply, amount = pending.popleft()
            except IndexError:
                return
            apply(amount)

    def observe_latency(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request's latency."""
        key = (method, route, status)
        child = self._latency_children.get(key)
        if child is None:
            child = self._latency_children[key] = self.latency.labels(method, route, str(status))
        self._queue(child.observe, seconds)

    def recommendation(self, source: str, degraded: bool) -> None:
        """Count one recommendations response."""
        key = (source, degraded)
        child = self._recommendation_children.get(key)
        if child is None:
            child = self._recommendation_children[key] = self.recommendations.labels(source, str(degraded).lower())
        self._queue(child.inc, 1)

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
        self._queue(child.inc, 1)

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
        """The text exposition format (queued observations applied first)."""
        self.apply_pending()
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
