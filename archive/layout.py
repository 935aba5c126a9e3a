"""Where an archived event goes and what its row holds.

A folder per kind of record (``events``, ``served``), in it one Hive-style folder per event hour
(UTC), in it the Parquet files Flink's filesystem connector commits (named by Flink, no suffix)::

    <archive>/events/hour=2026-12-04T16/part-5c1d...-0-3

Each row keeps the record's framed-Avro bytes exactly as read (``raw``) beside decoded columns
for queries (DuckDB, pandas), and where it came from (``partition``, ``offset``).

>>> hour_of(1_796_400_000_000)
'2026-12-04T16'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from schemas import Event

HOUR_KEY = "hour"

#: The columns of every events file, as the archive job writes them (the hour is the folder's, read back with
#: ``hive_partitioning``); tests build files of the same shape with :func:`to_table`.
ROW_SCHEMA = pa.schema([
    pa.field("partition", pa.int32(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
    pa.field("event_time_ms", pa.int64(), nullable=False),
    pa.field("event_id", pa.string(), nullable=False),
    pa.field("type", pa.string(), nullable=False),
    pa.field("user_id", pa.string(), nullable=False),
    pa.field("item_id", pa.string()),
    pa.field("value", pa.float64()),
    pa.field("raw", pa.binary(), nullable=False),
])


def hour_of(event_time_ms: int) -> str:
    """The UTC hour an event time falls in, as its folder names it."""
    return datetime.fromtimestamp(event_time_ms // 1000, UTC).strftime("%Y-%m-%dT%H")


def hour_folder(hour: str) -> str:
    """The folder of one hour.

    >>> hour_folder("2026-12-04T16")
    'hour=2026-12-04T16'
    """
    return f"{HOUR_KEY}={hour}"


@dataclass(frozen=True, slots=True)
class ArchivedEvent:
    """One event as read from Kafka: where it was, its bytes as read, and the event they decode to."""

    partition: int
    offset: int
    raw: bytes
    event: Event

    @property
    def hour(self) -> str:
        """The event's hour (its folder)."""
        return hour_of(self.event.event_time_ms)


def to_table(events: Sequence[ArchivedEvent]) -> pa.Table:
    """The rows of ``events`` in :data:`ROW_SCHEMA`, in the given order."""
    return pa.table({
        "partition": [e.partition for e in events],
        "offset": [e.offset for e in events],
        "event_time_ms": [e.event.event_time_ms for e in events],
        "event_id": [e.event.event_id for e in events],
        "type": [e.event.type.value for e in events],
        "user_id": [e.event.user_id for e in events],
        "item_id": [e.event.item_id for e in events],
        "value": [e.event.value for e in events],
        "raw": [e.raw for e in events],
    }, schema=ROW_SCHEMA)
