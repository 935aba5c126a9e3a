"""``pulse exporter``: what ``pulse lag`` measures, as Prometheus metrics on ``/metrics``.

Every scrape measures afresh (Kafka offsets and boundary records, a Redis SCAN sample, new
dead letters), so a scrape and ``pulse lag --json`` taken at the same moment agree. Scrapes are
serialised; a failed measurement yields ``pulse_exporter_up 0`` instead of an error page.
The job's own metrics come from Flink's Prometheus reporter (``PULSE_METRICS_PORT``), not from here.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from pulse.app import app, settings_of
from pulse.lag import LagProbe, metric_families
from pulse.reach import require

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


@app.command()
def exporter(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(envvar="PULSE_EXPORTER_HOST", help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(envvar="PULSE_EXPORTER_PORT", help="Port of /metrics")] = None,
) -> None:
    """Serve pulse_lag_*, pulse_score_freshness_seconds, pulse_dlq_* gauges for Prometheus (until SIGTERM)."""
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
