"""``pulse serve``: the HTTP serving shim (recommendations, sessions, decisions, collector)."""

from __future__ import annotations

from typing import Annotated

import typer

from pulse.app import app, settings_of
from pulse.reach import kafka_problem, redis_problem, warn


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(envvar="PULSE_SERVING_HOST", help="Bind address")] = None,
    port: Annotated[int | None, typer.Option(envvar="PULSE_SERVING_PORT", help="Port")] = None,
    workers: Annotated[int | None, typer.Option(
        envvar="PULSE_SERVING_WORKERS", help="Worker processes sharing the port (default: one per CPU core)")] = None,
    create_topics: Annotated[bool, typer.Option(help="Create the events topic when missing")] = True,
) -> None:
    """Serve /v1 (API keys: PULSE_SERVING_API_KEYS), /healthz, /readyz, /metrics; OpenAPI at /docs."""
    from producers.topics import ensure_topics
    from serving.server import run

    settings = settings_of(ctx)
    overrides = {"serving_host": host, "serving_port": port, "serving_workers": workers}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    # Serving starts without Kafka or Redis (/readyz reports them); one line each says which is missing.
    later = "; serving starts anyway and /readyz reports it"
    kafka_ok = warn(kafka_problem(settings), later)
    warn(redis_problem(settings), later)
    if kafka_ok and create_topics:
        try:
            served = [settings.topic_served] if settings.serving_log_served else []  # every served list (ADR 0009)
            ensure_topics(settings, [settings.topic_events, *served], timeout_s=10.0)
        except Exception as exc:  # noqa: BLE001 - serving still starts; /readyz reports Kafka
            typer.secho(f"warning: could not ensure topic {settings.topic_events}: {exc}", err=True)
    run(settings)
