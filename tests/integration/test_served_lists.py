"""Every served recommendation list reaches the served topic, with its hashed variant (real Kafka and Redis)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from config import Settings
from config.experiments import Experiment, Variant
from flink_jobs.redis_writer import RedisWriter
from producers.topics import ensure_topics
from schemas import ServedList, ServedListCodec
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running

T0 = 1_700_000_000_000
N = 40
RECS = Experiment(name="home-recs", surface="recommendations", salt="it-1", variants=(
    Variant(name="A", policy="mf", share=0.45), Variant(name="B", policy="popularity", share=0.45)))  # 10 %: none
BANNER = Experiment(name="banner", surface="decisions", variants=(
    Variant(name="control", policy="uniform", share=0.5), Variant(name="bandit", policy="ts", share=0.5)))


@pytest.fixture
def experiment_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"topic_served": f"served-{uuid.uuid4().hex[:8]}",
                                       "experiments": (RECS, BANNER)})


@pytest.fixture
def client(experiment_settings: Settings, redis_url: str) -> Iterator[httpx.Client]:
    s = experiment_settings
    ensure_topics(s, [s.topic_events, s.topic_served])
    keys = RedisKeys(s.redis_prefix)
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([
            *((keys.recs(f"u{u}"), T0, {"items": [[f"i{(u + j) % 7}", 5.0 - 0.25 * j] for j in range(4)],
                                        "global_mean": 3.5}) for u in range(N)),
            (keys.popularity("*"), T0, {"segment": "*", "items": [["p1", 9.0], ["p2", 4.0], ["p3", 1.0]],
                                        "at_ms": T0, "half_life_ms": 3_600_000}),
            (keys.bandit("ts", "global"), T0, {"policy": "ts", "scope": "global",
                                               "stat_names": ["successes", "failures"],
                                               "arms": {"a": [30.0, 70.0], "b": [50.0, 50.0]}, "hyperparameters": {}}),
        ])
    with running(create_app(s)) as url, httpx.Client(base_url=url, timeout=30.0) as http:
        yield http


def read_served(settings: Settings, expected: int, timeout_s: float = 15.0, linger_s: float = 1.0) -> list[bytes]:
    """Every record of the served topic: until ``expected`` arrived, then ``linger_s`` more (to see any extra)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    # Assigned, not subscribed: no consumer-group join to wait for.
    consumer.assign([TopicPartition(settings.topic_served, p, OFFSET_BEGINNING) for p in range(settings.partitions)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                values.append(msg.value())
            if len(values) >= expected:
                deadline = min(deadline, time.monotonic() + linger_s)
    finally:
        consumer.close()
    return values


def test_every_served_list_is_logged_with_its_variant(client: httpx.Client, experiment_settings: Settings) -> None:
    bodies: dict[str, dict[str, Any]] = {}
    for u in range(N):
        response = client.get(f"/v1/users/u{u}/recommendations", params={"k": 3})
        assert response.status_code == 200, response.text
        body = response.json()
        bodies[body["request_id"]] = body
        variant = RECS.assign(f"u{u}")
        assert body["experiment"] == (RECS.name if variant else None)
        assert body["variant"] == (variant.name if variant else None)
        assert body["source"] == ("popularity" if variant is not None and variant.policy == "popularity" else "model")
    assert {b["variant"] for b in bodies.values()} == {"A", "B", None}  # the salt puts users in all three

    codec = ServedListCodec()
    records = [codec.decode(value) for value in read_served(experiment_settings, N)]
    assert len(records) == N and {r.request_id for r in records} == set(bodies)
    for record in records:
        body = bodies[record.request_id]
        variant = RECS.assign(record.user_id)
        assert (record.experiment, record.variant) == ((RECS.name, variant.name) if variant else (None, None))
        assert record.policy == (variant.policy if variant else "mf") and record.source == body["source"]
        assert [(i.item_id, i.position, i.score) for i in record.items] == [
            (item["item_id"], position, item["score"]) for position, item in enumerate(body["items"])]
        assert record.user_id == body["user_id"] and record.model_version == body["model_version"] == "mf-v1"
        assert record.prefix == experiment_settings.redis_prefix and record.surface == "recommendations"
        assert isinstance(record, ServedList) and abs(record.served_at_ms - time.time() * 1000) < 60_000

    for u in range(6):  # the decisions experiment assigns by the same function
        decision = client.post("/v1/decisions", json={"user_id": f"u{u}", "decision_point": "home"}).json()
        variant = BANNER.assign(f"u{u}")
        assert variant is not None and (decision["experiment"], decision["variant"]) == ("banner", variant.name)
        assert decision["policy"] == ("uniform" if variant.policy == "uniform" else "ts")
