"""The archive holds exactly the events and served lists produced (count and digest per hour), survives a SIGKILL.

Issue 18 "Archive and backfill" (the backfill itself: test_archive_backfill.py). Real Kafka and a
real Flink job: ``pulse archive run`` runs the archive job (Flink SQL, filesystem connector,
Parquet) on a MiniCluster in its own process, as a user runs it; DuckDB reads what it wrote.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from archive.digest import HourDigest, digests_by_hour
from archive.files import archive_digests, archived_files
from archive.layout import hour_of
from archive.rows import EVENTS, SERVED
from archive.verify import verify
from config import REPO_ROOT, Settings
from infra.local.process import free_port
from producers.producer import EventProducer
from producers.topics import ensure_topics
from schemas import Event, EventType, ServedList, ServedListCodec, load_registry
from schemas.served import ServedItem
from tests.integration.jobs import inherited_env

pytestmark = pytest.mark.flink_job

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HOURS = 5
BAD = [b"\x07not avro", b"\x00\x00\x00\x00\x01\xff\xff"]


def produce(settings: Settings, n: int, seed: int, start: int = 0, bad: bool = True,
            spread: int | None = None) -> dict[str, HourDigest]:
    """Events ``start..start+n`` spread over HOURS hours of event time (and two undecodable records); their digests."""
    rng = random.Random(seed)
    sent: list[tuple[str, bytes]] = []
    spread = spread or start + n
    with EventProducer(settings) as producer:
        for i in range(start, start + n):
            event = Event(f"ev-{seed}-{i}", rng.choice([EventType.VIEW, EventType.CLICK]), f"u{rng.randrange(300)}",
                          T0 + i * HOURS * 3_600_000 // spread, item_id=f"i{rng.randrange(500)}")
            raw = producer.codec.encode(event)
            producer.send_raw(event.user_id.encode(), raw)
            sent.append((hour_of(event.event_time_ms), raw))
        for raw in BAD if bad else []:
            producer.send_raw(b"bad", raw)
    assert producer.report.ok
    return digests_by_hour(sent)


def last_on_every_partition(settings: Settings, letters: list[bytes]) -> int:
    """One of ``letters`` (undecodable) appended to every partition of the events topic; how many were sent."""
    with EventProducer(settings) as producer:
        for partition in range(settings.partitions):
            producer.send_raw(b"bad", letters[partition % len(letters)], partition)
    assert producer.report.ok
    return settings.partitions


def produce_served(settings: Settings, n: int) -> dict[str, HourDigest]:
    """``n`` served lists over two hours (as serving logs them) and one undecodable record; their digests."""
    codec = ServedListCodec(load_registry(settings.schema_registry_url))
    sent = []
    with EventProducer(settings, settings.topic_served) as producer:
        for i in range(n):
            served = ServedList(f"req-{i}", f"u{i % 40}", T0 + i * 2 * 3_600_000 // n, "recommendations", "mf", "mf",
                                settings.redis_prefix, "v1", "exp" if i % 2 else None, "B" if i % 2 else None, None,
                                (ServedItem("i1", 0, 0.9), ServedItem("i2", 1, 0.5)))
            raw = codec.encode(served)
            producer.send_raw(served.user_id.encode(), raw)
            sent.append((hour_of(served.served_at_ms), raw))
        producer.send_raw(b"bad", b"\x07not a served list")
    assert producer.report.ok
    return digests_by_hour(sent)


def dead_letters(settings: Settings) -> int:
    consumer = Consumer(settings.kafka_config(**{"group.id": "dlq-count", "enable.auto.commit": False}))
    try:
        return sum(high - low for low, high in (
            consumer.get_watermark_offsets(TopicPartition(settings.topic_dlq, p), timeout=30)
            for p in range(settings.partitions)))
    finally:
        consumer.close()


def duckdb_counts(folder: Path) -> dict[str, int]:
    rows = duckdb.sql(f"SELECT hour, count(*) FROM read_parquet('{folder}/hour=*/part-*', hive_partitioning=true) "
                      "GROUP BY hour").fetchall()
    return {str(hour): int(count) for hour, count in rows}


def archive_command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pulse", "archive", *args, "--dir", str(root)]


def files_in(folder: Path) -> int:
    return len(list(archived_files(folder))) if folder.exists() else 0


def run_until_end(settings: Settings, root: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*archive_command(root, "run"), "--until-end"], cwd=REPO_ROOT,
                          env={**inherited_env(), **settings.to_env()}, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_archive_holds_exactly_the_records_produced_and_duckdb_reads_it(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"archive_group_id": f"a-{settings.job_name}"})
    ensure_topics(settings)
    produced, served = produce(settings, 6_000, seed=1), produce_served(settings, 400)
    root = tmp_path / "archive"

    done = run_until_end(settings, root)

    hours = ", ".join(f"{h} {d.count}" for h, d in sorted(produced.items()))
    print(f"\n{done.stdout.strip().splitlines()[-1]}; hours: {hours}")
    assert "archived 6000 events and 400 served lists" in done.stdout
    assert len(produced) == HOURS and len(served) == 2
    assert archive_digests(root / EVENTS.folder) == produced
    assert archive_digests(root / SERVED.folder) == served  # every logged list, in its own folder
    assert dead_letters(settings) == len(BAD) + 1  # counted and kept with their bytes, not archived silently
    assert duckdb_counts(root / EVENTS.folder) == {hour: d.count for hour, d in produced.items()}
    checked = verify(settings, root)
    assert checked.ok and checked.undecodable == len(BAD) and checked.archive == produced
    cli = subprocess.run(archive_command(root, "verify"), cwd=REPO_ROOT, capture_output=True, text=True,
                         env={**inherited_env(), **settings.to_env()}, timeout=120, check=False)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert f"{HOURS} hours, 6000 events: archive and {settings.topic_events} match" in cli.stdout
    assert f"2 hours, 400 served lists: archive and {settings.topic_served} match" in cli.stdout

    # A doubled file (as a writer without exactly-once commits could leave) is caught, hour by hour.
    hour, path = next(archived_files(root / EVENTS.folder))
    shutil.copy(path, path.with_name(path.name + "-copy"))
    doubled = verify(settings, root)
    assert not doubled.ok and [line.split(":")[0] for line in doubled.problems] == [f"hour {hour}"]


def test_archive_survives_a_sigkill_nothing_lost_nothing_doubled(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"archive_flush_s": 1.0, "archive_group_id": f"a-{settings.job_name}"})
    ensure_topics(settings)
    total, chunk = 24_000, 2_000
    root, log = tmp_path / "archive", tmp_path / "archive.log"
    env = {**inherited_env(), **settings.to_env()}
    with log.open("ab") as out:
        first = subprocess.Popen(archive_command(root, "run"), cwd=REPO_ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    # Events keep coming while the job runs; it is killed (JobManager, TaskManager and Python alike) once it
    # has committed files and while events are still being produced.
    produced = [produce(settings, chunk, seed=2, bad=False, spread=total)]

    def keep_producing() -> None:
        for n in range(1, total // chunk):
            produced.append(produce(settings, chunk, seed=2 + n, start=n * chunk, bad=False, spread=total))
            time.sleep(1.0)

    deadline = time.monotonic() + 180

    def wait(condition: Callable[[], bool], what: str) -> None:
        while not condition():
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the archive job never {what}"
            time.sleep(0.05)

    wait(lambda: files_in(root / EVENTS.folder) > 0, "committed files")
    producing = threading.Thread(target=keep_producing)
    producing.start()
    files = files_in(root / EVENTS.folder)
    wait(lambda: files_in(root / EVENTS.folder) > files, "committed files of a second checkpoint")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = sum(d.count for d in archive_digests(root / EVENTS.folder).values())
    producing.join(timeout=120)

    second = run_until_end(settings, root)
    expected: dict[str, HourDigest] = {}
    for part in produced:
        for hour, digest in part.items():
            merged = expected.setdefault(hour, HourDigest())
            merged.count, merged.digest = merged.count + digest.count, (merged.digest + digest.digest) % 2**64
    print(f"\nkilled with {at_kill} events in files; restart: {second.stdout.strip().splitlines()[-1]}")
    assert 0 < at_kill < total
    assert sum(d.count for d in expected.values()) == total
    assert archive_digests(root / EVENTS.folder) == expected
    assert verify(settings, root).ok


def test_sigterm_commits_the_last_files_and_dead_letters_are_a_metric(settings: Settings, tmp_path: Path) -> None:
    # A checkpoint interval longer than the test: only the stop's savepoint can commit the files.
    settings = settings.model_copy(update={"archive_flush_s": 600.0, "archive_group_id": f"a-{settings.job_name}",
                                           "metrics_port": free_port()})
    ensure_topics(settings)
    produced = produce(settings, 1_000, seed=7, bad=False)
    # An undecodable record last on every partition: the source reads each partition in order, so once
    # every one is counted, every event has been through the decode (a count of records on one partition
    # only would let the tail of another still be unread when the stop comes: CI saw 998 of 1,000).
    markers = last_on_every_partition(settings, BAD)
    root, log = tmp_path / "archive", tmp_path / "archive.log"
    with log.open("ab") as out:
        env = {**inherited_env(), **settings.to_env()}
        job = subprocess.Popen(archive_command(root, "run"), cwd=REPO_ROOT, env=env, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, counted = time.monotonic() + 120, None
        while counted != markers:
            assert job.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"archive_dead_letters never reached {markers} (last {counted})"
            time.sleep(0.5)
            try:
                scrape = httpx.get(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=2).text
            except httpx.HTTPError:
                continue
            values = [float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                      if "archive_dead_letters" in line and not line.startswith("#")]
            counted = int(sum(values)) if values else None
        assert files_in(root / EVENTS.folder) == 0  # nothing committed yet: no checkpoint has completed
        job.send_signal(signal.SIGTERM)  # the command only, as `kill PID` does (its JVM must live to stop the job)
        assert job.wait(timeout=120) == 0, log.read_text()[-3000:]
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    print(f"\nSIGTERM: {log.read_text().strip().splitlines()[-1]}")
    assert archive_digests(root / EVENTS.folder) == produced
