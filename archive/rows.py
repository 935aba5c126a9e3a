"""One Kafka record as the archive job writes it: its decoded columns and event hour, or a dead letter.

The archive job (``archive/job.py``) calls :meth:`RecordDecoder.decode` from a Python function
inside Flink for every record of an archived topic; everything here is plain Python, tested
without Flink. The last two values of a decoded row are the hour (the partition key) and, for a
record that does not decode, its dead letter (``dlq.avsc``, as the job writes them), else None.

>>> from schemas import Event, EventCodec, EventType
>>> decoder = RecordDecoder(EVENTS, "events")
>>> raw = EventCodec().encode(Event("e1", EventType.CLICK, "u1", 1_796_400_000_000, item_id="i1"))
>>> decoder.decode(raw, 0, 7)[:4], decoder.decode(raw, 0, 7)[-2:]
((1796400000000, 'e1', 'click', 'u1'), ('2026-12-04T16', None))
>>> decoder.decode(b"junk", 0, 8)[-1] is not None
True
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from archive.layout import hour_of
from schemas import DeadLetterCodec, DecodeError, EventCodec, SchemaRegistry
from schemas.served import ServedListCodec


@dataclass(frozen=True, slots=True)
class ArchivedKind:
    """One kind of record the archive keeps: its folder and its decoded columns (Flink SQL types)."""

    folder: str
    columns: tuple[tuple[str, str], ...]

    @property
    def time_column(self) -> str:
        """The column the hour is taken from (the first)."""
        return self.columns[0][0]


EVENTS = ArchivedKind("events", (
    ("event_time_ms", "BIGINT"), ("event_id", "STRING"), ("type", "STRING"), ("user_id", "STRING"),
    ("item_id", "STRING"), ("value", "DOUBLE"),
))
SERVED = ArchivedKind("served", (
    ("served_at_ms", "BIGINT"), ("request_id", "STRING"), ("user_id", "STRING"), ("surface", "STRING"),
    ("source", "STRING"), ("policy", "STRING"), ("prefix", "STRING"), ("model_version", "STRING"),
    ("experiment", "STRING"), ("variant", "STRING"), ("segment", "STRING"),
    ("items", "ARRAY<ROW<item_id STRING, `position` INT, score DOUBLE>>"),
))
KINDS = (EVENTS, SERVED)


class RecordDecoder:
    """Decodes the records of one topic into :data:`EVENTS` or :data:`SERVED` rows."""

    def __init__(self, kind: ArchivedKind, topic: str, registry: SchemaRegistry | None = None) -> None:
        self.kind, self.topic = kind, topic
        # == not "is": Flink runs a pickled copy of the kind.
        self._codec = EventCodec(registry) if kind == EVENTS else ServedListCodec(registry)
        self._dead_letters = DeadLetterCodec(registry)
        self.last_error: DecodeError | None = None  # why the last dead letter did not decode (for logs)

    def decode(self, raw: bytes, partition: int, offset: int) -> tuple[Any, ...]:
        """(*columns, hour, None), or (None..., None, dead letter bytes) when ``raw`` does not decode."""
        try:
            values = self._values(raw)
        except DecodeError as exc:
            self.last_error = exc
            letter = self._dead_letters.encode(raw, exc.reason.value, f"archive: {exc.detail}", self.topic, partition,
                                               offset, int(time.time() * 1000))
            return (*([None] * len(self.kind.columns)), None, letter)
        return (*values, hour_of(values[0]), None)

    def _values(self, raw: bytes) -> Sequence[Any]:
        if isinstance(self._codec, EventCodec):
            e = self._codec.decode(raw)
            return (e.event_time_ms, e.event_id, e.type.value, e.user_id, e.item_id, e.value)
        s = self._codec.decode(raw)
        return (s.served_at_ms, s.request_id, s.user_id, s.surface, s.source, s.policy, s.prefix, s.model_version,
                s.experiment, s.variant, s.segment, [(i.item_id, i.position, i.score) for i in s.items])
