"""``pulse produce SOURCE``: events from a source to Kafka, with progress and delivery accounting."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer
from tqdm import tqdm

from producers.producer import EventProducer
from producers.sources import SOURCE_HELP, ReplayOrder, open_source
from producers.topics import ensure_topics
from pulse.app import app, fail, settings_of
from pulse.reach import require


@app.command()
def produce(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)] = "synthetic",
    limit: Annotated[int | None, typer.Option(help="Stop after this many events")] = None,
    rate: Annotated[float | None, typer.Option(help="At most this many events per second")] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default: the events topic)")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic generator")] = 7,
    order: Annotated[
        ReplayOrder, typer.Option(help="File sources: by event time (as `pulse eval` and sessions need) or file order")
    ] = ReplayOrder.TIME,
) -> None:
    """Produce events (key = user id, framed Avro). Prints produced / failed; exits 1 on failures."""
    settings = settings_of(ctx)
    try:
        events = open_source(source, seed=seed, limit=limit, order=order)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc), code=2) from None
    target = topic or settings.topic_events
    require(settings, kafka=True)
    ensure_topics(settings, [target])
    with EventProducer(settings, topic=target) as producer, tqdm(
        total=limit, unit="ev", desc=f"-> {target}", disable=None
    ) as progress:
        done = 0
        try:
            for sent in producer.send_all(itertools.islice(events, limit), rate=rate):
                progress.update(sent - done)
                done = sent
        except ValueError as exc:  # a malformed line of a file source, named by file and line
            producer.flush()
            raise fail(f"{exc} (after {producer.report.produced} events produced)", code=2) from None
    report = producer.report
    typer.echo(f"produced {report.produced}, failed {report.failed}")
    for error, count in report.errors.most_common():
        typer.echo(f"  {count} x {error}", err=True)
    if not report.ok:
        raise typer.Exit(1)
