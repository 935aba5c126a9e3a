"""The Flink job against real Kafka, Redis and a Flink MiniCluster (acceptance of the job issue)."""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import redis as redis_lib
from confluent_kafka import Consumer

from config import Settings
from online_models.popularity import ALL, DecayedPopularity
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import DeadLetterCodec, EventCodec
from schemas.redis_keys import Envelope, RedisKeys
from serving.sync_reads import user_part
from tests.integration.jobs import run_bounded_job
from tests.unit.schemas.test_codec import MALFORMED

pytestmark = pytest.mark.flink_job

N_GOOD = 20_000
N_BAD = 200


@pytest.fixture
def job_settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"checkpoint_dir": tmp_path / "checkpoints", "checkpoint_interval_ms": 2000})


def read_topic(settings: Settings, topic: str, expected: int, timeout_s: float = 30) -> list[bytes]:
    import time

    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"t-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest", "isolation.level": "read_committed",
    }))
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(values) < expected:
        values += [m.value() for m in consumer.consume(500, timeout=1.0) if m.error() is None]
    # Linger a little to catch anything beyond what was expected.
    values += [m.value() for m in consumer.consume(500, timeout=2.0) if m.error() is None]
    consumer.close()
    return values


def read_positions(settings: Settings, topic: str, wanted: set[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """The values at ``(partition, offset)`` in ``topic`` (the whole topic is read once)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": f"t-{uuid.uuid4().hex[:6]}",
                                                 "auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    found: dict[tuple[int, int], bytes] = {}
    idle = 0
    while len(found) < len(wanted) and idle < 10:
        batch = [m for m in consumer.consume(1000, timeout=1.0) if m.error() is None]
        idle = 0 if batch else idle + 1
        found |= {(m.partition(), m.offset()): m.value() for m in batch if (m.partition(), m.offset()) in wanted}
    consumer.close()
    return found


def test_synthetic_stream_with_malformed_records(job_settings: Settings, tmp_path: Path) -> None:
    settings = job_settings
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=21, limit=N_GOOD))
    rng = random.Random(4)
    codec = EventCodec()
    reasons = list(MALFORMED)
    bad_at = set(rng.sample(range(N_GOOD), N_BAD))
    expected_reasons: Counter[str] = Counter()
    bad_payloads: list[bytes] = []
    with EventProducer(settings) as producer:
        for i, event in enumerate(events):
            producer.send(event)
            if i in bad_at:
                reason = reasons[sum(expected_reasons.values()) % len(reasons)]
                bad_payloads.append(MALFORMED[reason](codec, rng, i))
                producer.send_raw(event.user_id.encode(), bad_payloads[-1])
                expected_reasons[reason.value] += 1
    assert producer.report.produced == N_GOOD + N_BAD

    run_bounded_job(settings, log=tmp_path / "job.log")

    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    want: dict[str, Counter[str]] = defaultdict(Counter)
    learnable: set[str] = set()
    for event in events:
        want[event.user_id][event.type.value] += 1
        if event.type.value in {"view", "click", "add_to_cart", "purchase", "rating"}:
            learnable.add(event.user_id)
    wrong = []
    for user, counts in want.items():
        stored = user_part(client, keys, user, "counts")
        if stored is None or stored.payload["counts"] != dict(counts):
            wrong.append((user, dict(counts), stored and stored.payload["counts"]))
    assert not wrong, f"{len(wrong)} of {len(want)} users have wrong counts, e.g. {wrong[:2]}"
    missing_recs = [u for u in learnable if not user_part(client, keys, u, "recs")]
    assert not missing_recs, f"{len(missing_recs)} active users have no top-k"
    some_recs = user_part(client, keys, sorted(learnable)[0], "recs")
    assert some_recs is not None and 0 < len(some_recs.payload["items"]) <= settings.top_k

    bandit_keys = [k.decode() for k in client.scan_iter(f"{settings.redis_prefix}:bandit:*", count=1000)]
    scopes = {k.split(":")[3] for k in bandit_keys}
    assert scopes == {"global", "segment", "user"}, scopes

    model = Envelope.from_fields(client.hgetall(keys.model("mf"))).payload
    assert model["events_learned"] == sum(
        1 for e in events if e.type.value in {"view", "click", "add_to_cart", "purchase", "rating"}
    )

    # Popularity is counted by the item owners and ranked per segment: the same numbers as the
    # sequential learner over the same events.
    reference = DecayedPopularity()
    for event in events:
        reference.learn_event(event)
    segments = [ALL, *sorted({e.context["segment"] for e in events if e.context.get("segment")})[:2]]
    for segment in segments:
        stored = Envelope.from_fields(client.hgetall(keys.popularity(segment))).payload
        ranked = {item: count for item, count in stored["items"]}
        assert len(ranked) == min(100, len(reference.top_n(10_000, segment=segment)))
        for item, count in ranked.items():
            assert count == pytest.approx(reference.score(item, segment, stored["at_ms"]), rel=1e-9), (segment, item)
        best = [count for _, count in reference.top_n(len(ranked), segment=segment, at_ms=stored["at_ms"])]
        assert sorted(ranked.values(), reverse=True) == pytest.approx(best, rel=1e-9), segment

    dead = [DeadLetterCodec().decode(v) for v in read_topic(settings, settings.topic_dlq, N_BAD)]
    assert len(dead) == N_BAD
    assert Counter(d["reason"] for d in dead) == expected_reasons
    assert sorted(d["original"] for d in dead) == sorted(bad_payloads)  # the original bytes, whole
    assert all(d["detail"] for d in dead)
    # Each dead letter names where it came from: the events topic holds its bytes at that position.
    at = {(d["source_partition"], d["source_offset"]): d["original"] for d in dead}
    assert None not in {p for p, _ in at} and len(at) == N_BAD
    found = read_positions(settings, settings.topic_events, set(at))
    assert found == at
