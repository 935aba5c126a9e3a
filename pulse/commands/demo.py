"""``pulse demo``: local services up, a synthetic stream produced, and a live view of it arriving."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from typing import Annotated

import typer
from confluent_kafka import Consumer
from rich.live import Live
from rich.table import Table

from infra.local.process import ServiceError
from infra.local.services import LocalServices
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from pulse.cli import app, fail, settings_of
from pulse.settings import Settings
from schemas import DecodeError, EventCodec


@app.command()
def demo(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Synthetic events per second")] = 2000.0,
    seconds: Annotated[float, typer.Option(help="How long to run (0 = until Ctrl-C)")] = 0.0,
) -> None:
    """Start local services, produce a synthetic stream and show it arriving in Kafka."""
    settings = settings_of(ctx)
    try:
        LocalServices(settings).up()
    except ServiceError as exc:
        raise fail(str(exc)) from None
    ensure_topics(settings)
    stop = threading.Event()
    producer_thread = threading.Thread(target=_produce, args=(settings, rate, stop), daemon=True)
    producer_thread.start()
    try:
        _watch(settings, seconds, stop)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        producer_thread.join(timeout=10)
    typer.echo("demo stopped; services keep running (`pulse down` stops them)")


def _produce(settings: Settings, rate: float, stop: threading.Event) -> None:
    events = open_source("synthetic", seed=int(time.time()))
    with EventProducer(settings) as producer:
        for _ in producer.send_all(itertools.takewhile(lambda _: not stop.is_set(), events), rate=rate):
            pass


def _watch(settings: Settings, seconds: float, stop: threading.Event) -> None:
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"pulse-demo-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "latest",
    }))
    consumer.subscribe([settings.topic_events])
    codec = EventCodec()
    by_type: Counter[str] = Counter()
    users: set[str] = set()
    bad = 0
    started = time.monotonic()
    window_start, window_count, rate_now = started, 0, 0.0
    with Live(refresh_per_second=4) as live:
        while not stop.is_set() and (not seconds or time.monotonic() - started < seconds):
            for msg in consumer.consume(num_messages=500, timeout=0.25):
                if msg.error():
                    continue
                try:
                    event = codec.decode(msg.value())
                except DecodeError:
                    bad += 1
                    continue
                by_type[event.type.value] += 1
                users.add(event.user_id)
                window_count += 1
            now = time.monotonic()
            if now - window_start >= 1.0:
                rate_now, window_start, window_count = window_count / (now - window_start), now, 0
            live.update(_table(settings, by_type, len(users), bad, rate_now))
    consumer.close()


def _table(settings: Settings, by_type: Counter[str], users: int, bad: int, rate: float) -> Table:
    table = Table(title=f"events arriving on {settings.topic_events} @ {settings.kafka_bootstrap}")
    table.add_column("event type")
    table.add_column("count", justify="right")
    for name, count in sorted(by_type.items()):
        table.add_row(name, f"{count:,}")
    table.add_row("[bold]all[/]", f"[bold]{sum(by_type.values()):,}[/]")
    table.caption = f"{rate:,.0f} events/s, {users:,} users seen, {bad} undecodable"
    return table
