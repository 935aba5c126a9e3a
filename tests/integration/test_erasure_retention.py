"""Issue 22.6: erasure reaches Kafka by retention, and every erasure is logged (real Kafka and Redis).

* The topics that hold users' events get the configured retention, hourly segments and
  LogAppendTime (a replayed 1997 event must not expire at once); existing topics are aligned.
* ``DELETE /v1/users/{id}`` appends to the erasure log what it removed, when, and by when the
  user's events are gone from Kafka; the log holds a digest of the id, never the id.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Consumer, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from config import Settings
from producers.producer import EventProducer
from producers.topics import ensure_topics
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys
from serving.erasure import user_digest
from tests.integration.test_serving import T0, client, keys, seed_model, serve, writer  # noqa: F401 - fixtures

USER_DATA = ("topic_events", "topic_sessions", "topic_dlq")


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    deadline = time.monotonic() + 30
    while True:  # a topic created a moment ago may not be known to the broker's metadata yet
        (future,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, name)]).values()
        try:
            return {key: entry.value for key, entry in future.result(timeout=30).items()}
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_user_data_topics_get_the_configured_retention(settings: Settings) -> None:
    settings = settings.model_copy(update={"topic_retention_ms": 2 * 86_400_000, "topic_segment_ms": 1_800_000})
    ensure_topics(settings)
    for field in USER_DATA:
        config = topic_configs(settings, getattr(settings, field))
        assert config["retention.ms"] == str(2 * 86_400_000), field
        assert config["segment.ms"] == "1800000", field
        assert config["cleanup.policy"] == "delete", field
        assert config["message.timestamp.type"] == "LogAppendTime", field
    assert topic_configs(settings, settings.topic_items)["cleanup.policy"] == "compact"


def test_existing_topics_are_aligned_with_the_settings(settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.create_topics([NewTopic(settings.topic_events, 1, 1)]).values():
        future.result(timeout=30)  # broker defaults: 7 days, CreateTime
    assert topic_configs(settings, settings.topic_events)["retention.ms"] == str(7 * 86_400_000)
    ensure_topics(settings)
    config = topic_configs(settings, settings.topic_events)
    assert config["retention.ms"] == str(settings.topic_retention_ms)
    assert config["message.timestamp.type"] == "LogAppendTime"


def test_retention_counts_from_when_the_broker_wrote_the_event(settings: Settings) -> None:
    ensure_topics(settings)
    old = Event("old-1", EventType.VIEW, "u1", 874_724_710_000, "i1")  # a MovieLens-era event time
    with EventProducer(settings) as producer:
        producer.send(old)
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topic_events])
    try:
        deadline = time.monotonic() + 30
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            message = polled if polled is not None and not polled.error() else None
    finally:
        consumer.close()
    assert message is not None
    kind, ts = message.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert abs(ts - time.time() * 1000) < 120_000


def test_erasure_is_logged_without_the_user_id(client: httpx.Client, writer: Any, keys: RedisKeys,  # noqa: F811
                                               settings: Settings, redis_client: Any) -> None:
    seed_model(writer, keys, "u-erased")
    before = int(time.time() * 1000)
    response = client.delete("/v1/users/u-erased")
    assert response.status_code == 202
    entries = redis_client.xrange(keys.erasures())
    assert len(entries) == 1
    _, raw = entries[0]
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    print(f"\nerasure log entry: {fields}")
    assert fields["user_digest"] == user_digest("u-erased")
    assert fields["event_id"] == response.json()["event_id"]
    assert fields["redis_keys_deleted"] == str(response.json()["keys_deleted"]) == "2"
    at = int(fields["at_ms"])
    assert before <= at <= int(time.time() * 1000)
    assert int(fields["kafka_deleted_by_ms"]) == at + settings.erasure_bound_ms()
    assert all("u-erased" not in value for value in fields.values())

