"""``pulse demo``: local services up, the job running, a steady synthetic stream, and a live view.

The stream starts once the job's tasks all run (its REST API on a free port says so), not during
the job's start-up and restore, which would otherwise begin every demo with a backlog of its own.

The job runs in the background as ``<home>/run/demo-job.pid`` (``pulse/demo_job.py``): Ctrl-C,
SIGTERM and SIGHUP stop it with the demo, and ``pulse down`` stops it when the demo could not (a
demo killed with SIGKILL).
"""

from __future__ import annotations

import contextlib
import csv
import signal
import threading
import time
from collections import deque
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, TextIO

import redis as redis_lib
import typer
from rich.console import Console, Group
from rich.live import Live

from config import Settings
from infra.local.process import ManagedProcess, ServiceError, free_port
from infra.local.services import LocalServices
from online_models.mf_params import EventTargets
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from pulse.app import app, fail, settings_of
from pulse.demo_job import demo_job, start_demo_job, stop_demo_job
from pulse.demo_view import DemoCounters, RunRecord, learned_events, newest_score_ms, summary, users_table
from pulse.flink_rest import FlinkRest, FlinkRestError
from pulse.reach import require
from schemas.redis_keys import Envelope, RedisKeys

#: Signals that end the demo like Ctrl-C does (SIGTERM: `timeout`, process managers; SIGHUP: a closed terminal).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@app.command()
def demo(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="Synthetic events per second")] = 3000.0,
    seconds: Annotated[float, typer.Option(help="How long to run (0 = until Ctrl-C, SIGTERM or SIGHUP)")] = 0.0,
    trace: Annotated[Path | None, typer.Option(
        help="Also write every look (twice a second) to this CSV file: seconds in, produced/s, learned/s, "
             "newest score age in ms (empty before the first score)")] = None,
) -> None:
    """Start services and the job, stream synthetic events, and watch scores change in Redis."""
    try:  # before anything starts: a path that cannot be written is the user's error, not a traceback
        looks = None if trace is None else trace.open("w", newline="", buffering=1)
    except OSError as exc:
        raise fail(f"cannot write the trace file {trace}: {exc.strerror}") from None
    with contextlib.nullcontext() if looks is None else looks:
        _run(ctx, rate, seconds, looks)


def _run(ctx: typer.Context, rate: float, seconds: float, looks: TextIO | None) -> None:
    settings = _start_services(settings_of(ctx))
    previous = {sig: signal.signal(sig, _interrupt) for sig in STOP_SIGNALS}
    stop = threading.Event()
    producer: threading.Thread | None = None
    job: ManagedProcess | None = None
    record = RunRecord()
    try:
        learned_at_start = learned_events(_model(_redis(settings), RedisKeys(settings.redis_prefix)))
        already = demo_job(settings).pid() is not None
        if not already and (note := restore_note(_checkpoint_age_s(settings), settings.session_gap_ms,
                                                 settings.impression_ttl_ms)):
            typer.echo(note)
        job = start_demo_job(settings)
        typer.echo(f"job started (pid {job.pid()}), log {job.log_file}")
        if not already:  # the stream starts once the job runs, not during its ~12-20 s of start-up and restore
            waited = _wait_for_tasks(settings, job)
            typer.echo(f"the job's tasks run after {waited:.0f} s (Flink's web UI: "
                       f"http://127.0.0.1:{settings.job_rest_port}); producing {rate:.0f} events/s")
        recent_users: deque[str] = deque(maxlen=2_000)  # ~1-2 s of the stream: its newest scores are among them
        sent = [0, 0]  # produced, of which with a learning target
        producer = threading.Thread(target=_produce, args=(settings, rate, stop, recent_users, sent), daemon=True)
        producer.start()
        _watch(settings, seconds, job, recent_users, sent, DemoCounters(learned_at_start), record, looks)
    except KeyboardInterrupt:
        pass
    finally:
        for sig in STOP_SIGNALS:  # a second signal must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        stop.set()
        if producer is not None:
            producer.join(timeout=10)
        if job is not None:
            stop_demo_job(job)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    typer.echo(record.line())
    typer.echo("demo stopped; the job's state is in its checkpoints; `pulse down` stops the services")


def restore_note(age_s: float | None, session_gap_ms: int, impression_ttl_ms: int) -> str | None:
    """What to expect from a job resuming a checkpoint ``age_s`` old, when that is past the session gap or the TTL.

    The stream's event time is the wall clock, so every restored session and pending impression is then due on
    the job's first watermark: it closes them before it learns again (ADR 0007, the eighteenth and
    twenty-fourth sections: 6-15 s without learning, caught up with the stream after 30-40 s).

    >>> restore_note(None, 1_800_000, 1_800_000) is None, restore_note(600.0, 1_800_000, 1_800_000) is None
    (True, True)
    >>> print(restore_note(5_640.0, 1_800_000, 1_800_000))  # doctest: +ELLIPSIS
    resuming the job's checkpoint of 94 minutes ago: ... past the 30-minute session gap and impression TTL, ...
    >>> print(restore_note(5_640.0, 1_800_000, 600_000))  # doctest: +ELLIPSIS
    resuming ...: ... past the 30-minute session gap and the 10-minute impression TTL, so the job closes them ...
    >>> print(restore_note(900.0, 1_800_000, 600_000))  # doctest: +ELLIPSIS
    resuming ... of 15 minutes ago: its pending impressions are past the 10-minute impression TTL, so the job ...
    """
    if age_s is None:
        return None
    gap, ttl = session_gap_ms / 60_000, impression_ttl_ms / 60_000
    sessions, impressions = age_s * 1000 >= session_gap_ms, age_s * 1000 >= impression_ttl_ms
    if sessions and impressions:
        what = "open sessions and pending impressions"
        limit = (f"{gap:g}-minute session gap and impression TTL" if gap == ttl
                 else f"{gap:g}-minute session gap and the {ttl:g}-minute impression TTL")
    elif sessions or impressions:  # only what is older than its own limit is due at once
        what, limit = (("open sessions", f"{gap:g}-minute session gap") if sessions
                       else ("pending impressions", f"{ttl:g}-minute impression TTL"))
    else:
        return None
    return (f"resuming the job's checkpoint of {age_s / 60:.0f} minutes ago: its {what} are past the {limit}, "
            "so the job closes them all first and starts behind the stream (typically caught up within a minute)")


def _checkpoint_age_s(settings: Settings) -> float | None:
    """Seconds since the checkpoint the job would resume completed (``None``: it starts empty)."""
    from flink_jobs.launch import restore_latest  # ~0.5 s of imports, only for the demo's start

    path, _ = restore_latest(settings)
    return None if path is None else time.time() - (path / "_metadata").stat().st_mtime


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _start_services(settings: Settings) -> Settings:
    """Start the local services; the settings the demo uses (addresses, the job's REST port), topics created."""
    services = LocalServices(settings)
    try:
        services.up()
    except ServiceError as exc:
        raise fail(str(exc)) from None
    local = settings.model_copy(update={"kafka_bootstrap": services.kafka.bootstrap, "redis_url": services.redis.url,
                                        "job_rest_port": settings.job_rest_port or free_port()})
    require(local, kafka=True, redis=True)
    ensure_topics(local)
    return local


def _wait_for_tasks(settings: Settings, job: ManagedProcess, timeout_s: float = 300.0) -> float:
    """Wait until the job's tasks all run (its REST API says so); the seconds waited. Fails if the job stops."""
    rest = FlinkRest(f"127.0.0.1:{settings.job_rest_port}", timeout_s=2.0)
    started = time.monotonic()
    with Console(stderr=True).status("starting the job") as status:
        while (waited := time.monotonic() - started) < timeout_s:
            if job.pid() is None:
                raise fail(f"the job stopped while starting; see {job.log_file}\n{job.log_tail()}")
            try:
                jobs = rest.jobs()
            except FlinkRestError:  # its REST API is not up yet
                jobs = []
            if any(found.tasks_up for found in jobs):
                return waited
            tasks = next((f"{found.tasks_running} of {found.tasks_total} tasks running" for found in jobs), "")
            status.update(f"starting the job (JVM, Flink, Python, its checkpoint if any): {waited:.0f} s"
                          + (f", {tasks}" if tasks else ""))
            time.sleep(0.5)
    raise fail(f"the job's tasks were not all running after {timeout_s:.0f} s; see {job.log_file}\n{job.log_tail()}")


def _produce(settings: Settings, rate: float, stop: threading.Event, users: deque[str], sent: list[int]) -> None:
    targets = EventTargets()  # the job's (mf_config): what it learns from, so learned/s compares like with like

    def remember(events: Any) -> Any:
        for event in events:
            if stop.is_set():
                return
            users.append(event.user_id)
            sent[0] += 1
            if targets.learns_from(event):
                sent[1] += 1
            # Event time = now, so freshness and lag read in wall-clock terms.
            yield event.__class__(**{**{f: getattr(event, f) for f in event.__slots__},
                                     "event_time_ms": time.time_ns() // 1_000_000})

    with EventProducer(settings) as producer:
        for _ in producer.send_all(remember(open_source("synthetic", seed=int(time.time()))), rate=rate):
            pass


def _redis(settings: Settings) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(settings.redis_url, **settings.redis_client_kwargs())


def _model(client: redis_lib.Redis, keys: RedisKeys) -> Envelope | None:
    return Envelope.from_fields_or_none(client.hgetall(keys.model("mf")))


def _watch(
    settings: Settings, seconds: float, job: ManagedProcess, users: deque[str], sent: list[int],
    counters: DemoCounters, record: RunRecord, trace: TextIO | None = None,
) -> None:
    client = _redis(settings)
    keys = RedisKeys(settings.redis_prefix)
    started = time.monotonic()
    looks = None
    if trace is not None:
        looks = csv.writer(trace)
        looks.writerow(["seconds", "produced_per_s", "learned_per_s", "newest_score_ms"])
    with Live(refresh_per_second=2) as live:
        while not seconds or time.monotonic() - started < seconds:
            if job.pid() is None:
                raise fail(f"the job stopped; see {job.log_file}\n{job.log_tail()}")
            model = _model(client, keys)
            counters.update(time.monotonic(), produced=sent[0], learned=learned_events(model), learnable=sent[1])
            newest = newest_score_ms(client, keys, list(users)[::40], time.time() * 1000)  # 50 users over the window
            record.look(time.monotonic() - started, counters.produced_rate.rate, counters.learnable_rate.rate,
                        counters.learned_rate.rate, newest)
            if looks is not None:
                looks.writerow([f"{time.monotonic() - started:.1f}", f"{counters.produced_rate.rate:.0f}",
                                f"{counters.learned_rate.rate:.0f}", "" if newest is None else f"{newest:.0f}"])
            live.update(Group(summary(counters, model, newest), users_table(client, keys, list(users)[-5:])))
            time.sleep(0.5)
