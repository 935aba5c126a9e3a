"""``pulse archive run``: a Flink SQL job writing the events and served-lists topics as Parquet by hour.

Flink's filesystem connector writes the files (``format = parquet``), partitioned by ``hour``, a
column computed from each record's event (or served) time; Flink commits them on each completed
checkpoint, together with the Kafka source's offsets, so the archive is exactly once across a
kill: a restart restores the newest checkpoint or savepoint under ``<archive>/_flink`` (files in
progress then are hidden ``.part-*`` files that restore discards; files of a completed
checkpoint are committed). A Python function (``archive/rows.py``) decodes each record; the
ones that do not decode go to the DLQ (original bytes and reason) and are counted
(``archive_dead_letters``). The offsets are also committed to the archive's group
(``PULSE_ARCHIVE_GROUP_ID``), which ``pulse archive verify`` compares against.

A stop (SIGTERM / Ctrl-C, or ``--until-end`` once the group has committed the end offsets taken
at the start) is a stop-with-savepoint: the last files are committed before the job ends.
ADR 0011 has the choice and the measurements.
"""

from __future__ import annotations

import logging
import os
import site
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from archive.files import archive_digests, archived_files, claim
from archive.offsets import committed
from archive.rows import EVENTS, KINDS, ArchivedKind
from config import REPO_ROOT, Settings

log = logging.getLogger(__name__)

#: Checkpoints and savepoints of the archive job, inside the archive (hidden from readers by the "_").
FLINK_FOLDER = "_flink"


class ArchiveError(RuntimeError):
    """The archive job cannot go on (one line, for the command's error)."""


@dataclass
class ArchiveReport:
    """What the archive holds after a run."""

    archived: int = 0
    served: int = 0
    files: int = 0

    def __str__(self) -> str:
        return f"archived {self.archived} events and {self.served} served lists in {self.files} files"


def topics(settings: Settings) -> dict[ArchivedKind, str]:
    """The topic each kind is archived from."""
    return {EVENTS: settings.topic_events, **{k: settings.topic_served for k in KINDS if k != EVENTS}}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _with(options: Mapping[str, str]) -> str:
    return "WITH (" + ", ".join(f"{_quote(k)} = {_quote(v)}" for k, v in options.items()) + ")"


def statements(settings: Settings, root: Path) -> tuple[list[str], list[str]]:
    """(table definitions, inserts) of the archive job: pure, so they can be read and tested without Flink.

    >>> ddl, inserts = statements(Settings(), Path("/a"))
    >>> [s.split(" (")[0] for s in ddl]  # doctest: +NORMALIZE_WHITESPACE
    ['CREATE TABLE events_records', 'CREATE TABLE events_files', 'CREATE TEMPORARY VIEW events_decoded AS SELECT
      decode_events(`raw`, `partition`, `offset`) AS r FROM events_records',
     'CREATE TABLE served_records', 'CREATE TABLE served_files', 'CREATE TEMPORARY VIEW served_decoded AS SELECT
      decode_served(`raw`, `partition`, `offset`) AS r FROM served_records',
     'CREATE TABLE dead_letters']
    >>> "'path' = 'file:///a/events'" in ddl[1], "PARTITIONED BY (`hour`)" in ddl[1]
    (True, True)
    """
    kafka = {"properties.bootstrap.servers": settings.kafka_bootstrap,
             **{f"properties.{k}": v for k, v in settings.kafka_java_properties().items()}}
    ddl, inserts = [], []
    for kind, topic in topics(settings).items():
        name = kind.folder
        columns = ", ".join(f"`{c}` {t}" for c, t in kind.columns)
        ddl.append(f"CREATE TABLE {name}_records (`partition` INT METADATA VIRTUAL, `offset` BIGINT METADATA VIRTUAL, "
                   "`raw` BYTES) " + _with({
                       "connector": "kafka", "topic": topic, **kafka, "format": "raw",
                       "properties.group.id": settings.archive_group_id,
                       "properties.client.id.prefix": f"{settings.archive_group_id}-{name}",
                       "properties.isolation.level": "read_committed",
                       "properties.auto.offset.reset": "earliest", "scan.startup.mode": "group-offsets"}))
        ddl.append(f"CREATE TABLE {name}_files (`partition` INT, `offset` BIGINT, {columns}, `raw` BYTES, "
                   "`hour` STRING) PARTITIONED BY (`hour`) " + _with({
                       "connector": "filesystem", "path": (root / name).as_uri(), "format": "parquet",
                       "parquet.compression": "ZSTD",
                       # One file per hour and checkpoint unless it grows past this.
                       "sink.rolling-policy.file-size": "256MB"}))
        ddl.append(f"CREATE TEMPORARY VIEW {name}_decoded AS SELECT "
                   f"decode_{name}(`raw`, `partition`, `offset`) AS r FROM {name}_records")
        decoded = ", ".join(f"r.`{c}`" for c, _ in kind.columns)
        inserts.append(f"INSERT INTO {name}_files SELECT r.`partition`, r.`offset`, {decoded}, r.`raw`, r.`hour` "
                       f"FROM {name}_decoded WHERE r.dead_letter IS NULL")
        inserts.append(f"INSERT INTO dead_letters SELECT r.dead_letter FROM {name}_decoded "
                       "WHERE r.dead_letter IS NOT NULL")
    ddl.append("CREATE TABLE dead_letters (`letter` BYTES) " + _with({
        "connector": "kafka", "topic": settings.topic_dlq, **kafka, "format": "raw",
        "sink.delivery-guarantee": "at-least-once"}))
    return ddl, inserts


def flink_config(settings: Settings, root: Path, jars: Sequence[Path], restore_from: Path | None, *,
                 until_end: bool = False) -> dict[str, str]:
    """The job's Flink configuration: exactly-once checkpoints every ``PULSE_ARCHIVE_FLUSH_S`` into the archive.

    A run ``until_end`` checkpoints every second at most: it stops once the end is committed.
    """
    python = sys.executable
    interval_s = min(settings.archive_flush_s, 1.0) if until_end else settings.archive_flush_s
    config = {
        "parallelism.default": "1",
        "pipeline.jars": ";".join(j.resolve().as_uri() for j in jars),
        "python.executable": python, "python.client.executable": python,
        # The embedded interpreter (thread mode) sees the venv's packages and the repo only when told.
        "python.pythonpath": os.pathsep.join(dict.fromkeys([*site.getsitepackages(), str(REPO_ROOT)])),
        # Process mode: only there do a Table function's metrics reach Flink (thread mode drops them: ADR 0011).
        "python.execution-mode": "process",
        "execution.checkpointing.interval": f"{max(int(interval_s * 1000), 200)} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": (root / FLINK_FOLDER / "checkpoints").as_uri(),
        "execution.checkpointing.savepoint-dir": (root / FLINK_FOLDER / "savepoints").as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "restart-strategy.type": "fixed-delay" if settings.restart_attempts else "none",
        "restart-strategy.fixed-delay.attempts": str(settings.restart_attempts),
        "restart-strategy.fixed-delay.delay": "2 s",
        "table.exec.sink.not-null-enforcer": "DROP",
    }
    if restore_from is not None:
        config["execution.state-recovery.path"] = restore_from.as_uri()
    if settings.metrics_port:
        config["metrics.reporter.prom.factory.class"] = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        # A range: the live job's reporter may hold PULSE_METRICS_PORT; this job takes the next free port.
        config["metrics.reporter.prom.port"] = f"{settings.metrics_port}-{settings.metrics_port + 10}"
    return config


def latest_snapshot(root: Path) -> Path | None:
    """The newest completed checkpoint or savepoint of the archive job (a folder with ``_metadata``)."""
    flink = root / FLINK_FOLDER
    done = [m for pattern in ("checkpoints/*/chk-*/_metadata", "savepoints/*/_metadata") for m in flink.glob(pattern)]
    # By the _metadata file's time, not the folder's: discarding a subsumed checkpoint deletes files
    # in its folder (making it newer), and a job killed meanwhile leaves it half deleted.
    return max(done, key=lambda m: m.stat().st_mtime_ns).parent if done else None


def run_archive(settings: Settings, root: Path, jars: Sequence[Path], *, until_end: bool = False,
                should_stop: Callable[[], bool] = lambda: False) -> ArchiveReport:
    """Run the archive job on a MiniCluster here until ``should_stop()`` or, with ``until_end``, the end offsets."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    try:
        claim(root, settings.topic_events, settings.archive_group_id)
    except ValueError as exc:
        raise ArchiveError(str(exc)) from None
    ends = end_offsets(settings, list(topics(settings).values())) if until_end else {}
    restore_from = latest_snapshot(root)
    config = Configuration()
    for key, value in flink_config(settings, root, jars, restore_from, until_end=until_end).items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.add_jars(*config.get_string("pipeline.jars", "").split(";"))
    tables = StreamTableEnvironment.create(env)
    tables.get_config().set("table.local-time-zone", "UTC")
    from archive.functions import decode_function

    for kind, topic in topics(settings).items():
        tables.create_temporary_function(f"decode_{kind.folder}", decode_function(kind, topic, settings))
    ddl, inserts = statements(settings, root)
    for statement in ddl:
        tables.execute_sql(statement)
    job = tables.create_statement_set()
    for statement in inserts:
        job.add_insert_sql(statement)
    log.info("archive job starting%s", f", restored from {restore_from}" if restore_from else "")
    client = job.execute().get_job_client()
    assert client is not None
    _wait(settings, client, ends, should_stop)
    return report(root)


def _wait(settings: Settings, client: Any, ends: Mapping[str, Mapping[int, int]], should_stop: Callable[[], bool]
          ) -> None:
    """Until a stop is asked or the group has committed ``ends``; then stop with a savepoint (files committed)."""
    from pyflink.java_gateway import get_gateway

    while True:
        status = str(client.get_job_status().result())
        if status in ("FAILED", "CANCELED", "FINISHED"):
            raise ArchiveError(f"the archive job ended {status}: see the Flink log ({os.environ.get('FLINK_LOG_DIR')})")
        if should_stop() or (ends and _caught_up(settings, ends)):
            break
        time.sleep(0.5)
    formats = get_gateway().jvm.org.apache.flink.core.execution.SavepointFormatType
    path = client._j_job_client.stopWithSavepoint(False, None, formats.CANONICAL).get()
    log.info("archive job stopped with savepoint %s", path)


def end_offsets(settings: Settings, names: Sequence[str]) -> dict[str, dict[int, int]]:
    """Topic -> partition -> end offset now (topics that do not exist are left out)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": settings.archive_group_id, "enable.auto.commit": False}))
    try:
        found = consumer.list_topics(timeout=30).topics
        return {t: {p: consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)[1] for p in found[t].partitions}
                for t in names if t in found and found[t].error is None}
    finally:
        consumer.close()


def _caught_up(settings: Settings, ends: Mapping[str, Mapping[int, int]]) -> bool:
    """Whether the archive's group has committed at least ``ends`` on every partition that has records."""
    consumer = Consumer(settings.kafka_config(**{"group.id": settings.archive_group_id, "enable.auto.commit": False}))
    try:
        for topic, offsets in ends.items():
            done = committed(consumer, topic, sorted(offsets))
            if any(end > 0 and done.get(p, -1) < end for p, end in offsets.items()):
                return False
        return True
    finally:
        consumer.close()


def report(root: Path) -> ArchiveReport:
    """How many events, served lists and files the archive holds."""
    served = root / "served"
    return ArchiveReport(
        archived=sum(d.count for d in archive_digests(root / EVENTS.folder).values()),
        served=sum(d.count for d in archive_digests(served).values()) if served.exists() else 0,
        files=sum(1 for kind in KINDS for _ in archived_files(root / kind.folder)))
