"""The archive holds exactly the events produced (count and digest per hour), survives a SIGKILL, DuckDB reads it.

Issue 18 "Archive and backfill" (the backfill itself: test_archive_backfill.py). Real Kafka; the
archiver runs in this process (``Archiver``) or as ``pulse archive run``, as a user runs it.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
from confluent_kafka import Consumer, TopicPartition

from archive.archiver import Archiver
from archive.digest import HourDigest, digests_by_hour
from archive.files import archive_digests, archived_files
from archive.layout import hour_of
from archive.verify import verify
from config import REPO_ROOT, Settings
from producers.producer import EventProducer
from producers.topics import ensure_topics
from schemas import Event, EventType
from tests.integration.jobs import inherited_env

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HOURS = 5
BAD = [b"\x07not avro", b"\x00\x00\x00\x00\x01\xff\xff"]


def produce(settings: Settings, n: int, seed: int) -> dict[str, HourDigest]:
    """``n`` clicks and views over HOURS hours of event time (and two undecodable records); the digests sent."""
    rng = random.Random(seed)
    sent: list[tuple[str, bytes]] = []
    with EventProducer(settings) as producer:
        for i in range(n):
            event = Event(f"ev-{seed}-{i}", rng.choice([EventType.VIEW, EventType.CLICK]), f"u{rng.randrange(300)}",
                          T0 + i * HOURS * 3_600_000 // n, item_id=f"i{rng.randrange(500)}")
            raw = producer.codec.encode(event)
            producer.send_raw(event.user_id.encode(), raw)
            sent.append((hour_of(event.event_time_ms), raw))
        for raw in BAD:
            producer.send_raw(b"bad", raw)
    assert producer.report.produced == n + len(BAD) and producer.report.ok
    return digests_by_hour(sent)


def dead_letters(settings: Settings) -> int:
    consumer = Consumer(settings.kafka_config(**{"group.id": "dlq-count", "enable.auto.commit": False}))
    try:
        return sum(high - low for low, high in (
            consumer.get_watermark_offsets(TopicPartition(settings.topic_dlq, p), timeout=30)
            for p in range(settings.partitions)))
    finally:
        consumer.close()


def duckdb_counts(root: Path) -> dict[str, int]:
    rows = duckdb.sql(f"SELECT hour, count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true) "
                      "GROUP BY hour").fetchall()
    return {str(hour): int(count) for hour, count in rows}


def archive_command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pulse", "archive", *args, "--dir", str(root)]


def files_in(root: Path) -> int:
    return len(list(archived_files(root))) if root.exists() else 0


def test_archive_holds_exactly_the_events_produced_and_duckdb_reads_it(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"archive_flush_events": 2_000, "archive_group_id": f"a-{settings.job_name}"})
    ensure_topics(settings)
    produced = produce(settings, 6_000, seed=1)
    root = tmp_path / "archive"

    report = Archiver(settings, root).run(until_end=True)

    print(f"\n{report}; hours: " + ", ".join(f"{h} {d.count}" for h, d in sorted(produced.items())))
    assert len(produced) == HOURS
    assert archive_digests(root) == produced
    assert report.archived == 6_000 and report.dead_letters == len(BAD)
    assert dead_letters(settings) == len(BAD)  # counted and kept with their bytes, not archived silently
    assert duckdb_counts(root) == {hour: d.count for hour, d in produced.items()}
    checked = verify(settings, root)
    assert checked.ok and checked.undecodable == len(BAD) and checked.archive == produced
    cli = subprocess.run(archive_command(root, "verify"), cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**inherited_env(), **settings.to_env()}, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert f"{HOURS} hours, 6000 events: archive and {settings.topic_events} match" in cli.stdout

    # A doubled file (as a crash without the offset protocol would leave) is caught, hour by hour.
    hour, partition, first, path = next(archived_files(root))
    path.with_name(f"part-{partition}-{first + 100_000}.parquet").write_bytes(path.read_bytes())
    doubled = verify(settings, root)
    assert not doubled.ok and [line.split(":")[0] for line in doubled.problems] == [f"hour {hour}"]


def test_archive_survives_a_sigkill_nothing_lost_nothing_doubled(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"archive_flush_events": 1_000, "archive_flush_s": 1.0,
                                           "archive_group_id": f"a-{settings.job_name}"})
    ensure_topics(settings)
    produced = produce(settings, 12_000, seed=2)
    root, log = tmp_path / "archive", tmp_path / "archive.log"
    env = {**inherited_env(), **settings.to_env()}
    with log.open("ab") as out:
        first = subprocess.Popen(archive_command(root, "run"), cwd=REPO_ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    # After two flushes have committed, killed as soon as the next one has written a file (before its commit).
    deadline = time.monotonic() + 120

    def wait(condition: Callable[[], bool], what: str) -> None:
        while not condition():
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the archiver never {what}"
            time.sleep(0.002)

    wait(lambda: log.read_text().count("; committed [") >= 2, "committed two flushes")
    files = files_in(root)
    wait(lambda: files_in(root) > files, "wrote a third flush")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = sum(d.count for d in archive_digests(root).values())

    second = subprocess.run([*archive_command(root, "run"), "--until-end"], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=180, check=False)
    assert second.returncode == 0, second.stderr[-3000:]
    print(f"\nkilled with {at_kill} events in files; restart: {second.stdout.strip()}; "
          + " ".join(line.split(": ", 1)[-1] for line in second.stderr.splitlines() if "deleted" in line))
    assert 0 < at_kill < 12_000
    assert archive_digests(root) == produced
    assert verify(settings, root).ok
