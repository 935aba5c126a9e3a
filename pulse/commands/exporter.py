"""``pulse exporter``: what ``pulse lag`` measures, as Prometheus metrics on ``/metrics``.

Every scrape measures afresh (Kafka offsets and boundary records, a Redis SCAN sample, new
dead letters), so a scrape and ``pulse lag --json`` taken at the same moment agree. Scrapes are
serialised; a failed measurement yields ``pulse_exporter_up 0`` instead of an error page. Each
scrape also reads every configured experiment's results (``<live prefix>:experiment:<name>``,
:mod:`pulse.experiment_results`) into ``pulse_experiment_exposures`` / ``pulse_experiment_outcomes``.
The job's own metrics come from Flink's Prometheus reporter (``PULSE_METRICS_PORT``), not from here.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from config import Settings
from pulse.app import app, settings_of
from pulse.experiment_results import metric_families as experiment_families
from pulse.experiment_results import read_results, running_experiments
from pulse.lag import LagProbe, metric_families
from pulse.reach import require
from schemas.redis_keys import RedisKeys

log = logging.getLogger(__name__)


class LagCollector:
    """A prometheus_client collector that measures on each scrape."""

    def __init__(self, probe: LagProbe) -> None:
        self.probe = probe
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        """Measure now and yield the metric families."""
        with self._lock:
            try:
                report = self.probe.measure()
            except Exception:
                log.exception("measurement failed")
                report = None
            yield from metric_families(report)


class ExperimentCollector:
    """A prometheus_client collector that reads each configured experiment's results on each scrape.

    An experiment without results yet has no samples; a failed read is logged and leaves the
    families empty for that scrape (``pulse_exporter_up`` says whether Redis answers).
    """

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        import redis as redis_lib

        self.names = [e.name for e in running_experiments(settings)]
        self.home = RedisKeys(settings.redis_prefix)
        self._redis = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=timeout_s,
                                               **settings.redis_client_kwargs())
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the Redis client."""
        self._redis.close()

    def collect(self) -> Iterator[Any]:
        """Read now and yield the experiment metric families."""
        with self._lock:
            results = {}
            try:
                for name in self.names:
                    counts = read_results(self._redis, self.home, name).counts
                    if counts is not None:
                        results[name] = counts
            except Exception:
                log.exception("reading experiment results failed")
                results = {}
            yield from experiment_families(results)


@app.command()
def exporter(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(envvar="PULSE_EXPORTER_HOST", help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(envvar="PULSE_EXPORTER_PORT", help="Port of /metrics")] = None,
) -> None:
    """Serve pulse_lag_*, pulse_score_freshness_seconds, pulse_dlq_*, pulse_experiment_* gauges (until SIGTERM)."""
    from prometheus_client import CollectorRegistry, start_http_server

    settings = settings_of(ctx)
    require(settings, kafka=True, redis=True)  # at start-up only: later a failed scrape is pulse_exporter_up 0
    host = host or settings.exporter_host
    port = settings.exporter_port if port is None else port
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with LagProbe(settings) as probe:
        registry = CollectorRegistry()
        registry.register(LagCollector(probe))
        experiments = ExperimentCollector(settings)
        registry.register(experiments)
        server, thread = start_http_server(port, addr=host, registry=registry)
        typer.echo(f"serving http://{host}:{server.server_port}/metrics "
                   f"(topic {settings.topic_events}, group {settings.job_group_id})", err=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.shutdown()
            thread.join(timeout=5)
            experiments.close()
