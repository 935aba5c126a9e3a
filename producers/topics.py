"""Create Pulse's topics when missing, with the configured partition count."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from config import Settings

log = logging.getLogger(__name__)


def pulse_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name -> topic config for every topic Pulse uses."""
    return {
        settings.topic_events: {},
        settings.topic_items: {"cleanup.policy": "compact"},  # latest catalogue entry per item
        # A dead letter is the original record plus its reason: allow it to be larger than any event.
        settings.topic_dlq: {"max.message.bytes": str(2 * 1024 * 1024)},
        settings.topic_sessions: {},
        # Not compacted: Flink's Python KafkaSink writes values without keys. Old snapshots are
        # useless (a restored job warms from checkpointed broadcast state), so keep one hour.
        settings.topic_item_params: {"retention.ms": str(3600 * 1000)},
    }


def ensure_topics(settings: Settings, names: list[str] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create the named topics (default: all of Pulse's) that do not exist; return those created."""
    wanted = pulse_topics(settings)
    if names is not None:
        wanted = {name: wanted.get(name, {}) for name in names}
    admin = AdminClient(settings.kafka_config())
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [
        NewTopic(name, num_partitions=settings.partitions, replication_factor=1, config=config)
        for name, config in wanted.items()
        if name not in existing
    ]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
            log.info("created topic %s with %d partitions", name, settings.partitions)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
