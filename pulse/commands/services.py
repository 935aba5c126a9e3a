"""``pulse up | down | status``: the local services."""

from __future__ import annotations

from typing import Annotated

import typer

from infra.local.process import ServiceError
from infra.local.services import LocalServices
from producers.topics import ensure_topics
from pulse.app import app, fail, print_json, settings_of
from pulse.demo_job import NAME, demo_job, stop_demo_job


@app.command()
def up(
    ctx: typer.Context,
    flink: Annotated[
        bool, typer.Option("--flink", help="Also start a standalone Flink cluster (1 JobManager + 2 TaskManagers)")
    ] = False,
) -> None:
    """Start local Kafka (KRaft) and Redis, wait until healthy, create Pulse's topics. Idempotent."""
    settings = settings_of(ctx)
    try:
        statuses = LocalServices(settings).up(flink=flink)
    except ServiceError as exc:
        raise fail(str(exc)) from None
    created = ensure_topics(settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{settings.kafka_port}"}))
    for s in statuses:
        typer.echo(f"{s.service:<9} {s.health:<9} {s.address:<28} pid {s.pid}")
    if created:
        typer.echo(f"created topics: {', '.join(created)}")
    if flink:
        typer.echo(f"submit the job with: pulse job submit --jobmanager 127.0.0.1:{settings.flink_rest_port}")


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop every local service Pulse started, and the job of `pulse demo` (no process is left behind)."""
    settings = settings_of(ctx)
    stopped = [NAME] if stop_demo_job(demo_job(settings)) else []  # first: it reads Kafka and writes Redis
    stopped += LocalServices(settings).down()
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Service, address, pid and health of each local service. Exit 1 when one is not healthy."""
    statuses = LocalServices(settings_of(ctx)).status()
    if as_json:
        print_json([s.as_dict() for s in statuses])
    else:
        typer.echo(f"{'service':<9} {'address':<28} {'pid':>8}  health")
        for s in statuses:
            typer.echo(f"{s.service:<9} {s.address:<28} {s.pid or '-':>8}  {s.health}")
    if any(s.health != "healthy" for s in statuses):
        raise typer.Exit(1)
