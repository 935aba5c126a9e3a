"""``pulse demo``: local services up, the job running, a steady synthetic stream, and a live view."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Annotated, Any

import redis as redis_lib
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from config import REPO_ROOT, Settings
from infra.local.process import ServiceError
from infra.local.services import LocalServices
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from pulse.app import app, fail, settings_of
from schemas.redis_keys import Envelope, RedisKeys


@app.command()
def demo(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Synthetic events per second")] = 1000.0,
    seconds: Annotated[float, typer.Option(help="How long to run (0 = until Ctrl-C)")] = 0.0,
) -> None:
    """Start services and the job, stream synthetic events, and watch scores change in Redis."""
    settings = settings_of(ctx)
    try:
        LocalServices(settings).up()
    except ServiceError as exc:
        raise fail(str(exc)) from None
    ensure_topics(settings)
    log = settings.home / "logs" / "demo-job.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    job = subprocess.Popen(  # the job as `pulse job run` runs it, resuming from its last checkpoint
        [sys.executable, "-m", "pulse", "job", "run"], cwd=REPO_ROOT, env={**os.environ, **settings.to_env()},
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    typer.echo(f"job started (pid {job.pid}), log {log}; producing {rate:.0f} events/s")
    stop = threading.Event()
    recent_users: deque[str] = deque(maxlen=200)
    sent = [0]
    producer = threading.Thread(target=_produce, args=(settings, rate, stop, recent_users, sent), daemon=True)
    producer.start()
    try:
        _watch(settings, seconds, job, recent_users, sent, log)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        producer.join(timeout=10)
        os.killpg(job.pid, 15)
        job.wait(timeout=60)
    typer.echo("demo stopped; the job's state is in its checkpoints; `pulse down` stops the services")


def _produce(settings: Settings, rate: float, stop: threading.Event, users: deque[str], sent: list[int]) -> None:
    def remember(events: Any) -> Any:
        for event in events:
            if stop.is_set():
                return
            users.append(event.user_id)
            sent[0] += 1
            # Event time = now, so freshness and lag read in wall-clock terms.
            yield event.__class__(**{**{f: getattr(event, f) for f in event.__slots__},
                                     "event_time_ms": time.time_ns() // 1_000_000})

    with EventProducer(settings) as producer:
        for _ in producer.send_all(remember(open_source("synthetic", seed=int(time.time()))), rate=rate):
            pass


def _watch(
    settings: Settings, seconds: float, job: subprocess.Popen[bytes], users: deque[str], sent: list[int], log: Path
) -> None:
    client = redis_lib.Redis.from_url(settings.redis_url, **settings.redis_client_kwargs())
    keys = RedisKeys(settings.redis_prefix)
    started = time.monotonic()
    previous = (started, 0)
    rate = 0.0
    with Live(refresh_per_second=2) as live:
        while not seconds or time.monotonic() - started < seconds:
            if job.poll() is not None:
                raise fail(f"the job exited with {job.returncode}; see {log}")
            model = Envelope.from_fields_or_none(client.hgetall(keys.model("mf")))
            learned = int(model.payload["events_learned"]) if model else 0
            now = time.monotonic()
            if now - previous[0] >= 2:
                rate, previous = (learned - previous[1]) / (now - previous[0]), (now, learned)
            live.update(Group(_summary(sent[0], learned, rate, model), _users(client, keys, list(users)[-5:])))
            time.sleep(0.5)


def _summary(sent: int, learned: int, rate: float, model: Envelope | None) -> Table:
    table = Table(title="Pulse demo", show_header=False)
    table.add_row("events produced", f"{sent:,}")
    table.add_row("events learned by the job", f"{learned:,}  ({rate:,.0f}/s)")
    rmse = model.payload.get("rmse") if model else None
    table.add_row("running RMSE (prequential)", f"{rmse:.3f}" if rmse else "-")
    if model:
        table.add_row("score freshness", f"{time.time() * 1000 - model.event_time_ms:,.0f} ms")
    return table


def _users(client: redis_lib.Redis, keys: RedisKeys, users: list[str]) -> Table:
    table = Table(title="a few users, live")
    for column in ("user", "session events", "top-3 items (score)", "freshness"):
        table.add_column(column)
    for user in dict.fromkeys(reversed(users)):
        session = Envelope.from_fields_or_none(client.hgetall(keys.session(user)))
        recs = Envelope.from_fields_or_none(client.hgetall(keys.recs(user)))
        top = ", ".join(f"{item} ({score:.2f})" for item, score in recs.payload["items"][:3]) if recs else "-"
        n = session.payload.get("n_events", "-") if session else "-"
        fresh = f"{time.time() * 1000 - recs.event_time_ms:,.0f} ms" if recs else "-"
        table.add_row(user, str(n), top, fresh)
    return table
