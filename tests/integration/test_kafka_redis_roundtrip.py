"""Foundation acceptance: real broker and real Redis, started by tests/services.py."""

from __future__ import annotations

import uuid

import redis as redis_lib
from confluent_kafka import Consumer

from config import Settings
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import EventCodec

N_EVENTS = 10_000


def consume_all(settings: Settings, topic: str, expected: int, timeout_s: float = 60.0) -> list[tuple[bytes, bytes]]:
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"test-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))
    consumer.subscribe([topic])
    records: list[tuple[bytes, bytes]] = []
    import time

    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=1.0):
                assert msg.error() is None, msg.error()
                records.append((msg.key(), msg.value()))
    finally:
        consumer.close()
    return records


def test_ten_thousand_synthetic_events_round_trip_through_the_broker(settings: Settings) -> None:
    sent = list(open_source("synthetic", seed=11, limit=N_EVENTS))
    assert len(sent) == N_EVENTS
    assert ensure_topics(settings, [settings.topic_events]) == [settings.topic_events]

    with EventProducer(settings) as producer:
        for _ in producer.send_all(sent):
            pass
    assert producer.report.produced == N_EVENTS and producer.report.failed == 0

    records = consume_all(settings, settings.topic_events, N_EVENTS)
    assert len(records) == N_EVENTS
    codec = EventCodec()
    received = [codec.decode(value) for _, value in records]
    # Kafka orders within a partition only: compare as sets of whole events, field by field,
    # and check every key is the event's user id.
    by_id = {event.event_id: event for event in received}
    assert len(by_id) == N_EVENTS
    for event in sent:
        assert by_id[event.event_id] == event
    assert all(key == codec.decode(value).user_id.encode() for key, value in records[:500])


def test_topics_are_created_with_configured_partitions(settings: Settings) -> None:
    ensure_topics(settings)
    from confluent_kafka.admin import AdminClient

    topics = AdminClient(settings.kafka_config()).list_topics(timeout=10).topics
    for name in (settings.topic_events, settings.topic_items, settings.topic_dlq, settings.topic_sessions):
        assert len(topics[name].partitions) == settings.partitions
    assert ensure_topics(settings) == []  # idempotent


def test_per_user_order_is_kept_within_a_partition(settings: Settings) -> None:
    sent = list(open_source("synthetic", seed=3, limit=2_000))
    ensure_topics(settings, [settings.topic_events])
    with EventProducer(settings) as producer:
        for _ in producer.send_all(sent):
            pass
    codec = EventCodec()
    received = [codec.decode(v) for _, v in consume_all(settings, settings.topic_events, len(sent))]
    per_user_sent: dict[str, list[str]] = {}
    per_user_received: dict[str, list[str]] = {}
    for event in sent:
        per_user_sent.setdefault(event.user_id, []).append(event.event_id)
    for event in received:
        per_user_received.setdefault(event.user_id, []).append(event.event_id)
    assert per_user_received == per_user_sent


def test_a_key_round_trips_through_real_redis(redis_client: redis_lib.Redis) -> None:
    key = f"pulse-test:{uuid.uuid4().hex}"
    value = EventCodec().encode(next(iter(open_source("synthetic", limit=1))))
    assert redis_client.set(key, value, ex=60)
    assert redis_client.get(key) == value
    assert redis_client.delete(key) == 1
    assert redis_client.get(key) is None


def test_delivery_failures_are_counted_not_hidden(settings: Settings) -> None:
    # The broker refuses records over the topic's max.message.bytes: a failure the producer must count.
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"tiny-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.kafka_config())
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "1000"})])[topic].result(30)
    with EventProducer(settings, topic=topic, **{"compression.type": "none", "message.timeout.ms": 5000}) as producer:
        producer.send_raw(b"u1", b"\x00" * 5000)
        producer.flush()  # its own batch: the broker rejects whole batches
        producer.send_raw(b"u1", b"\x00" * 10)
    assert producer.report.produced == 1
    assert producer.report.failed == 1
    assert producer.report.errors
