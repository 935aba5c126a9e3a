"""Where an archived event goes and what its row holds.

One Hive-style folder per event hour (UTC), one Parquet file per Kafka partition and first
offset in it, so a file's name says which records it holds and a re-written range replaces it::

    <archive>/hour=2026-12-04T16/part-0-1200.parquet

Each row keeps the record's framed-Avro bytes exactly as read (``raw``) beside decoded columns
for queries (DuckDB, pandas), and where it came from (``partition``, ``offset``).

>>> hour_of(1_796_400_000_000)
'2026-12-04T16'
>>> file_name(3, 1200), offsets_of("part-3-1200.parquet"), offsets_of("notes.txt")
('part-3-1200.parquet', (3, 1200), None)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from schemas import Event

HOUR_KEY = "hour"
_FILE = re.compile(r"part-(\d+)-(\d+)\.parquet")

#: The columns of every file (the hour is the folder's, read back with ``hive_partitioning``).
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


def file_name(partition: int, first_offset: int) -> str:
    """The file holding a partition's records of one hour from ``first_offset`` on (within one flush)."""
    return f"part-{partition}-{first_offset}.parquet"


def offsets_of(name: str) -> tuple[int, int] | None:
    """(partition, first offset) of an archive file's name; None for any other file."""
    match = _FILE.fullmatch(name)
    return (int(match[1]), int(match[2])) if match else None


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
