"""Archived events back to Kafka in event-time order, for ``pulse backfill`` (README "Archive and backfill").

Hours are read one at a time (their folders sort by time) and each hour's events sorted by
event time, then partition and offset (so events of one time keep the order they were read in):
memory holds one hour. Each event is sent as it was archived, its framed-Avro bytes unchanged and
keyed by user like the producers key it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import KafkaError, Message, Producer

from archive.files import archived_files
from config import Settings

_COLUMNS = ["event_time_ms", "partition", "offset", "user_id", "raw"]


def events_in_time_order(root: Path) -> Iterator[tuple[bytes, bytes]]:
    """(key, raw bytes) of every archived event, oldest first."""
    for _, files in itertools.groupby(archived_files(root), key=lambda found: found[0]):
        table = pa.concat_tables(pq.read_table(path, columns=_COLUMNS) for _, path in files)
        order = pc.sort_indices(table, [("event_time_ms", "ascending"), ("partition", "ascending"),
                                        ("offset", "ascending")])
        table = table.take(order)
        for user, raw in zip(table["user_id"].to_pylist(), table["raw"].to_pylist(), strict=True):
            yield user.encode(), raw


def replay(settings: Settings, root: Path, topic: str) -> int:
    """Send every archived event to ``topic`` in event-time order; how many (RuntimeError if any failed)."""
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            failed.append(err.str())

    producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all", "linger.ms": 20,
                                                 "compression.type": "lz4"}))
    sent = 0
    for key, raw in events_in_time_order(root):
        while True:
            try:
                producer.produce(topic, value=raw, key=key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let deliveries drain
        producer.poll(0)
        sent += 1
    left = producer.flush(120)
    if left or failed:
        raise RuntimeError(f"{left + len(failed)} of {sent} archived events were not delivered to {topic}: "
                           f"{failed[:1] or ['flush timed out']}")
    return sent
