"""Event time moves in a running job: sessions close while it runs, not only when a bounded job ends.

Real Kafka, Redis and the job (`pulse job run`, unbounded, MiniCluster). The user stage joins the
events with the item snapshots it shares with itself; those carry no event time, and a stream
without watermarks would hold the stage's event time at the start for ever (its session and
impression timers would never fire while the job runs). This failed before the snapshots got
watermarks at the end of time (`flink_jobs/java/pulse/flink/NoEventTime.java`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis as redis_lib

from config import Settings
from producers.producer import EventProducer
from producers.topics import ensure_topics
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys
from serving.sync_reads import user_part
from tests.integration.jobs import run_job_until

pytestmark = pytest.mark.flink_job


def test_a_session_closes_while_the_job_runs(settings: Settings, tmp_path: Path, redis_url: str) -> None:
    settings = settings.model_copy(update={"session_gap_ms": 2_000, "watermark_out_of_orderness_ms": 500})
    ensure_topics(settings)
    t0 = time.time_ns() // 1_000_000 - 60_000
    session = [Event(f"e{i}", EventType.VIEW, "closer", t0 + 100 * i, item_id=f"i{i}") for i in range(3)]
    # Another user's later events move event time past the first user's gap (and the out-of-orderness).
    clock = [Event(f"c{i}", EventType.VIEW, "clock", t0 + 10_000 + 1_000 * i, item_id="i9") for i in range(5)]
    with EventProducer(settings) as producer:
        for _ in producer.send_all(iter(session + clock)):
            pass
    assert producer.report.produced == len(session) + len(clock)
    client, keys = redis_lib.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix)

    def closed() -> bool:
        session = user_part(client, keys, "closer", "session")
        return session is not None and session.payload.get("open") is False

    started = time.monotonic()
    run_job_until(settings, closed, log=tmp_path / "job.log", timeout_s=90)
    counts = user_part(client, keys, "closer", "counts")
    assert counts is not None and counts.payload["counts"] == {"view": 3}
    print(f"\nthe session of 'closer' closed while the job ran ({time.monotonic() - started:.0f} s after start)")
