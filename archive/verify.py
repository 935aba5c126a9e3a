"""``pulse archive verify``: whether the archive holds exactly the records of the topics it archived.

The topic is read again, each partition from its first offset still retained up to the offset
the archive job committed, and each hour's count and digest compared with the archive's records of
the same offsets (events and served lists alike). Records that do not decode are left out on both
sides (the job sent them to the DLQ). Nothing is committed: the group is only asked for its offsets.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, TopicPartition

from archive.digest import HourDigest, differences
from archive.files import archive_digests
from archive.offsets import committed
from archive.rows import EVENTS, ArchivedKind, RecordDecoder
from config import Settings
from schemas import load_registry


@dataclass
class Verification:
    """Each hour's digest on both sides, and the lines where they differ."""

    topic: dict[str, HourDigest]
    archive: dict[str, HourDigest]
    ranges: dict[int, tuple[int, int]]  # partition -> (first, end) offsets compared
    undecodable: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every hour agrees."""
        return not self.problems


def verify(settings: Settings, root: Path, kind: ArchivedKind = EVENTS, timeout_s: float = 30.0) -> Verification:
    """Compare ``kind``'s folder of the archive under ``root`` with its topic up to the group's committed offsets."""
    topic = settings.topic_events if kind == EVENTS else settings.topic_served
    decoder = RecordDecoder(kind, topic, load_registry(settings.schema_registry_url))
    committed = _committed(settings, topic, timeout_s)
    reader = Consumer(settings.kafka_config(**{
        "group.id": f"pulse-archive-verify-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True,
    }))
    try:
        ranges = {}
        for p, end in committed.items():
            low, _ = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            ranges[p] = (low, end)
        result = Verification({}, {}, ranges)
        pending = {p: end for p, (low, end) in ranges.items() if end > low}
        reader.assign([TopicPartition(topic, p, ranges[p][0]) for p in pending])
        quiet_since = time.monotonic()
        while pending:
            messages = reader.consume(num_messages=5000, timeout=0.5)
            if messages:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > timeout_s:
                raise RuntimeError(f"no records from {topic} for {timeout_s:g} s, {len(pending)} partition(s) unread")
            for message in messages:
                partition, offset, error = message.partition(), message.offset(), message.error()
                if partition not in pending or offset is None:
                    continue
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(f"reading {topic}[{partition}] failed: {error.str()}")
                if error is None and offset < pending[partition]:
                    raw = message.value() or b""
                    *_, hour, dead_letter = decoder.decode(raw, partition, offset)
                    if dead_letter is not None:
                        result.undecodable += 1
                    else:
                        result.topic.setdefault(hour, HourDigest()).add(raw)
                if error is not None or offset >= pending[partition] - 1:
                    del pending[partition]
    finally:
        reader.close()
    result.archive = archive_digests(root / kind.folder, ranges)
    result.problems = differences(result.topic, result.archive)
    return result


def _committed(settings: Settings, topic: str, timeout_s: float) -> dict[int, int]:
    """Partition -> offset the archive's group committed on ``topic`` (partitions without one are left out)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": settings.archive_group_id, "enable.auto.commit": False}))
    try:
        meta = consumer.list_topics(timeout=timeout_s).topics.get(topic)  # no auto-creation
        if meta is None or meta.error is not None:
            raise RuntimeError(f"topic {topic!r} does not exist")
        offsets = committed(consumer, topic, sorted(meta.partitions), timeout_s)
        return {partition: offset for partition, offset in offsets.items() if offset >= 0}
    finally:
        consumer.close()
