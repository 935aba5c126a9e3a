"""``pulse archive run|verify`` and ``pulse backfill`` (README "Archive and backfill").

``run`` archives the events and served-lists topics into ``PULSE_ARCHIVE_DIR`` with a Flink SQL
job (``archive/job.py``), ``verify`` compares each hour's count and digest with a new read of the
topics, and ``backfill`` replays an archive in event-time order into a topic of its own and runs
the job over it, bounded, into a new Redis prefix, which ``pulse model promote`` can then make live.
"""

from __future__ import annotations

# The archive's modules (pyarrow, ~0.25 s) and redis are imported by the commands that use them:
# every `pulse` command builds this module's commands, and most never touch an archive.
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from config import Settings
from infra.local.jars import ensure_jars
from infra.local.process import ServiceError
from producers.topics import ensure_topics
from pulse.app import app, fail, print_json, settings_of
from pulse.commands.job import _job_jars, job_app
from pulse.reach import require
from schemas.redis_keys import Envelope, RedisKeys

archive_app = typer.Typer(help="The events and served-lists topics archived as Parquet by hour (exactly once).",
                          no_args_is_help=True)
app.add_typer(archive_app, name="archive")

ArchiveDir = Annotated[Path | None, typer.Option("--dir", help="Archive folder [env: PULSE_ARCHIVE_DIR; "
                                                                "default <home>/archive]")]


def archive_root(settings: Settings, given: Path | None = None) -> Path:
    """The archive folder: the flag, else ``PULSE_ARCHIVE_DIR``, else ``<home>/archive``."""
    return (given or settings.archive_dir or settings.home / "archive").resolve()


@archive_app.command("run")
def run(
    ctx: typer.Context,
    folder: ArchiveDir = None,
    until_end: Annotated[bool, typer.Option("--until-end", help="Stop once the topic's records at the start "
                                                                 "are archived")] = False,
) -> None:
    """Archive the topics until stopped (Ctrl-C / SIGTERM: a stop with savepoint commits the last files)."""
    settings = settings_of(ctx)
    root = archive_root(settings, folder)
    require(settings, kafka=True)
    ensure_topics(settings, [settings.topic_events, settings.topic_served, settings.topic_dlq])
    try:
        jars = [*ensure_jars(settings.home, "flink"), *ensure_jars(settings.home, "archive")]
    except ServiceError as exc:
        raise fail(str(exc)) from None
    from archive.job import ArchiveError, run_archive
    from flink_jobs.launch import prepare_local_flink

    prepare_local_flink(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    typer.echo(f"archiving {settings.topic_events} and {settings.topic_served} into {root} "
               f"(group {settings.archive_group_id}, a Flink job)", err=True)
    try:
        report = run_archive(settings, root, jars, until_end=until_end, should_stop=stop.is_set)
    except ArchiveError as exc:
        raise fail(str(exc)) from None
    typer.echo(str(report))


@archive_app.command("verify")
def verify_cmd(
    ctx: typer.Context,
    folder: ArchiveDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Each hour's count and digest in the archive vs the topic read again (exit 1 when any differ)."""
    from archive.rows import KINDS
    from archive.verify import verify

    settings = settings_of(ctx)
    root = archive_root(settings, folder)
    require(settings, kafka=True)
    try:
        results = {kind.folder: verify(settings, root, kind) for kind in KINDS}
    except RuntimeError as exc:
        raise fail(str(exc)) from None
    names = {"events": ("events", settings.topic_events), "served": ("served lists", settings.topic_served)}
    if as_json:
        print_json({name: {
            "ok": result.ok, "problems": result.problems, "undecodable": result.undecodable,
            "ranges": {str(p): list(r) for p, r in result.ranges.items()},
            "hours": {h: {"count": d.count, "digest": f"{d.digest:016x}"} for h, d in result.archive.items()}}
            for name, result in results.items()})
    else:
        for name, result in results.items():
            for line in result.problems:
                typer.echo(f"{name}: {line}")
            what, topic = names[name]
            verdict = "match" if result.ok else f"DIFFER in {len(result.problems)} hours"
            typer.echo(f"{len(result.archive)} hours, {sum(d.count for d in result.archive.values())} {what}: "
                       f"archive and {topic} {verdict} ({result.undecodable} undecodable records left out)")
    if not all(result.ok for result in results.values()):
        raise typer.Exit(1)


def backfill_settings(settings: Settings, prefix: str) -> Settings:
    """The job's settings for a backfill into ``prefix``: topics, group, name and checkpoints of its own.

    The catalogue (``topic_items``) is the live one, read from its start by the backfill's own group.

    >>> s = backfill_settings(Settings(), "pulse-v2")
    >>> s.redis_prefix, s.topic_events, s.job_group_id
    ('pulse-v2', 'events.backfill-pulse-v2', 'pulse-job-backfill-pulse-v2')
    """
    tag = f"backfill-{prefix}"
    update: dict[str, Any] = {
        "redis_prefix": prefix, "job_group_id": f"{settings.job_group_id}-{tag}",
        "job_name": f"{settings.job_name}-{tag}",
        "checkpoint_dir": settings.checkpoint_path() / tag,
    }
    for name in ("topic_events", "topic_sessions", "topic_dlq", "topic_item_params"):
        update[name] = f"{getattr(settings, name)}.{tag}"
    return settings.model_copy(update=update)


@app.command("backfill")
def backfill(
    ctx: typer.Context,
    source: Annotated[Path, typer.Option("--from-archive", "--from", help="Archive folder (pulse archive run)")],
    prefix: Annotated[str, typer.Option(help="New Redis prefix the learners are bootstrapped into")],
) -> None:
    """Replay an archive in event-time order through the job (bounded) into a new Redis prefix."""
    from archive.files import archived_files
    from archive.replay import replay
    from archive.rows import EVENTS
    from flink_jobs.launch import run as run_job

    settings = settings_of(ctx)
    root = source.resolve() / EVENTS.folder
    if prefix == settings.redis_prefix:
        raise fail(f"--prefix {prefix!r} is the live prefix (PULSE_REDIS_PREFIX): backfill into a new one")
    if next(archived_files(root), None) is None:
        raise fail(f"{root} holds no archive files (hour=*/part-*; `pulse archive run` writes them)")
    target = backfill_settings(settings, prefix)
    require(target, kafka=True, redis=True)
    if _records_in(target, target.topic_events):
        raise fail(f"topic {target.topic_events} already holds events (a backfill into {prefix!r} ran before): "
                   "choose a new prefix")
    ensure_topics(target)
    sent = replay(target, root, target.topic_events)
    typer.echo(f"replayed {sent} archived events into {target.topic_events}; running the job into {prefix!r}", err=True)
    run_job(target, jars=_job_jars(target), bounded=True)
    import redis as redis_lib

    client = redis_lib.Redis.from_url(target.redis_url, **target.redis_client_kwargs())
    model = Envelope.from_fields_or_none(client.hgetall(RedisKeys(prefix).model("mf")))  # type: ignore[arg-type]
    learned = model.payload.get("events_learned") if model else None
    rmse = model.payload.get("rmse") if model else None
    typer.echo(f"backfilled {sent} events into {prefix!r}: model mf learned {learned} events, running RMSE {rmse}; "
               f"make it live with `pulse model promote {prefix}`")


job_app.command("backfill", help="Same as `pulse backfill`.")(backfill)


def _records_in(settings: Settings, topic: str) -> int:
    """How many records ``topic`` holds (0 when it does not exist)."""
    admin = AdminClient(settings.kafka_config())
    meta = admin.list_topics(timeout=30).topics.get(topic)  # no topic named: no auto-creation
    if meta is None or meta.error is not None:
        return 0
    consumer = Consumer(settings.kafka_config(**{"group.id": "pulse-backfill-check", "enable.auto.commit": False}))
    try:
        return sum(high - low for low, high in (
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30) for p in meta.partitions))
    finally:
        consumer.close()
