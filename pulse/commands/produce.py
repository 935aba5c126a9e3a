"""``pulse produce SOURCE``: events (or, with ``--topic items``, catalogue entries) to Kafka.

Events are keyed by user id; catalogue entries by item id, so the compacted items topic keeps
the latest entry per item. Both are framed Avro, with progress and delivery accounting.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Annotated, TypeVar

import typer
from tqdm import tqdm

from producers.catalogue import CATALOGUE_HELP, open_catalogue
from producers.producer import EventProducer, ItemProducer, RecordProducer
from producers.sources import SOURCE_HELP, ReplayOrder, open_source
from producers.topics import ensure_topics
from pulse.app import app, fail, settings_of
from pulse.reach import require

R = TypeVar("R")
ITEMS_TOPIC_HELP = "Topic (default: the events topic); `items` (or PULSE_TOPIC_ITEMS) sends catalogue entries"
EVENT_SCHEMA_HELP = "Version of the events schema to write: 2 (block events, the default) or 1 (as producers before v2)"
BLOCK_SHARE_HELP = "Synthetic events: this share of the stream are block events (an item just shown, or its category)"


@app.command()
def produce(
    ctx: typer.Context,
    source: Annotated[str | None, typer.Argument(help=SOURCE_HELP, show_default="synthetic")] = None,
    source_option: Annotated[
        str | None, typer.Option("--source", help=f"The source, as an option.\n{CATALOGUE_HELP}")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Stop after this many events (or items)")] = None,
    rate: Annotated[float | None, typer.Option(help="At most this many events per second")] = None,
    topic: Annotated[str | None, typer.Option(help=ITEMS_TOPIC_HELP)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic generator")] = 7,
    order: Annotated[
        ReplayOrder, typer.Option(help="File sources: by event time (as `pulse eval` and sessions need) or file order")
    ] = ReplayOrder.TIME,
    new_items: Annotated[int, typer.Option(help="Synthetic catalogue: add this many items no event names yet")] = 0,
    unavailable: Annotated[int, typer.Option(help="Synthetic catalogue: mark this many items unavailable")] = 0,
    event_schema: Annotated[int, typer.Option(min=1, max=2, help=EVENT_SCHEMA_HELP)] = 2,
    block_share: Annotated[float, typer.Option(min=0.0, max=0.5, help=BLOCK_SHARE_HELP)] = 0.0,
) -> None:
    """Produce events (key = user id) or catalogue entries (--topic items, key = item id) as framed Avro.

    Events are written with version 2 of the events schema unless --event-schema 1 (an old
    producer: no block events). Prints produced / failed; exits 1 on failures, 2 on a bad
    source, path or line.
    """
    settings = settings_of(ctx)
    if source and source_option and source != source_option:
        raise fail(f"two sources given ({source!r} and --source {source_option!r}); give one", code=2)
    spec = source_option or source or "synthetic"
    items = topic in ("items", settings.topic_items)
    try:
        if not items and (new_items or unavailable):
            raise ValueError("--new-items and --unavailable need --topic items")
        if items and block_share:
            raise ValueError("--block-share is for events, not --topic items")
        if block_share and event_schema < 2:
            raise ValueError("--block-share needs --event-schema 2: version 1 has no block events")
        catalogue = open_catalogue(spec, seed=seed, new_items=new_items, unavailable=unavailable) if items else None
        events = None if items else open_source(
            spec, seed=seed, limit=limit, order=order, block_share=block_share or None)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc), code=2) from None
    target = settings.topic_items if items else topic or settings.topic_events
    require(settings, kafka=True)
    ensure_topics(settings, [target])
    if catalogue is not None:
        _send(ItemProducer(settings, topic=target), itertools.islice(catalogue, limit), "items", rate, limit)
    elif events is not None:
        producer = EventProducer(settings, topic=target, event_schema=event_schema)
        _send(producer, itertools.islice(events, limit), "events", rate, limit)


def _send(producer: RecordProducer[R], records: Iterable[R], noun: str, rate: float | None, limit: int | None) -> None:
    """Send with a progress bar; print the delivery report; exit 1 on failed deliveries."""
    unit = "item" if noun == "items" else "ev"
    with producer, tqdm(total=limit, unit=unit, desc=f"-> {producer.topic}", disable=None) as progress:
        done = 0
        try:
            for sent in producer.send_all(records, rate=rate):
                progress.update(sent - done)
                done = sent
        except ValueError as exc:  # a malformed line of a file source, named by file and line
            producer.flush()
            raise fail(f"{exc} (after {producer.report.produced} {noun} produced)", code=2) from None
        except KeyboardInterrupt:
            interrupted = True  # leaving ``with producer`` delivers what was sent; the report says how much
        else:
            interrupted = False
    report = producer.report
    typer.echo(f"{'stopped: ' if interrupted else ''}produced {report.produced}, failed {report.failed}")
    for error, count in report.errors.most_common():
        typer.echo(f"  {count} x {error}", err=True)
    if interrupted:
        raise typer.Exit(130)
    if not report.ok:
        raise typer.Exit(1)
