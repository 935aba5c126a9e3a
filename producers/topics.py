"""Create Pulse's topics when missing, with the configured partition count and retention.

Erasure (``DELETE /v1/users/{id}``) clears a user's Redis keys and Flink state within a second,
but Kafka cannot delete single records: the user's events stay in ``events``, ``sessions`` and
the DLQ until retention removes them. So those topics get an explicit, bounded retention
(``PULSE_TOPIC_RETENTION_MS``, segments rolled every ``PULSE_TOPIC_SEGMENT_MS``), counted from
when the broker appended each record (``LogAppendTime``: replayed datasets carry old event
times, which must not make records expire at once, nor a future time keep them).
:meth:`Settings.erasure_bound_ms` is the promise that follows; ensuring the topics also brings the
retention of topics that already exist in line with the settings.

>>> from config import Settings
>>> s = Settings(topic_retention_ms=3 * 86_400_000, topic_segment_ms=3_600_000)
>>> pulse_topics(s)["events"]["retention.ms"], pulse_topics(s)["events"]["message.timestamp.type"]
('259200000', 'LogAppendTime')
"""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from config import Settings

log = logging.getLogger(__name__)

def user_data_config(settings: Settings) -> dict[str, str]:
    """Config of a topic that holds users' events: deleted by age since the broker wrote them."""
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(settings.topic_retention_ms),
        "segment.ms": str(settings.topic_segment_ms),
        "message.timestamp.type": "LogAppendTime",
    }


def pulse_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name -> topic config for every topic Pulse uses."""
    user_data = user_data_config(settings)
    return {
        settings.topic_events: user_data,
        settings.topic_items: {"cleanup.policy": "compact"},  # latest catalogue entry per item
        # A dead letter is the original record plus its reason: allow it to be larger than any event.
        settings.topic_dlq: {**user_data, "max.message.bytes": str(2 * 1024 * 1024)},
        settings.topic_sessions: user_data,
        # Every served recommendation list (served.avsc): users' data, so the same bounded retention.
        settings.topic_served: user_data,
        # Not compacted: Flink's Python KafkaSink writes values without keys. Old snapshots are
        # useless (a restored job warms from checkpointed broadcast state), so keep one hour.
        # Item parameters only: no user's data.
        settings.topic_item_params: {"retention.ms": str(3600 * 1000)},
    }


def ensure_topics(settings: Settings, names: list[str] | None = None, timeout_s: float = 30.0) -> list[str]:
    """Create the named topics (default: all of Pulse's) that do not exist; return those created.

    Existing Pulse topics get their retention settings applied when they differ (a changed
    ``PULSE_TOPIC_RETENTION_MS`` takes effect without recreating the topic).
    """
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
    align_retention(admin, {name: config for name, config in wanted.items() if name in existing and config}, timeout_s)
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


def align_retention(admin: AdminClient, wanted: dict[str, dict[str, str]], timeout_s: float) -> list[str]:
    """Set the configs of ``wanted`` (existing topics) whose values differ; return the topics changed."""
    if not wanted:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in wanted]
    changes = []
    for resource, future in admin.describe_configs(resources, request_timeout=timeout_s).items():
        current = {key: entry.value for key, entry in future.result(timeout=timeout_s).items()}
        differ = {k: v for k, v in wanted[resource.name].items() if current.get(k) != v}
        if differ:
            entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in differ.items()]
            changes.append(ConfigResource(ResourceType.TOPIC, resource.name, incremental_configs=entries))
    if not changes:
        return []
    for resource, future in admin.incremental_alter_configs(changes, request_timeout=timeout_s).items():
        future.result(timeout=timeout_s)
        log.info("set %s on existing topic %s", ", ".join(e.name for e in resource.incremental_configs), resource.name)
    return [resource.name for resource in changes]
