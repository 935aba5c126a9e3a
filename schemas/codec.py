r"""Confluent wire framing (magic byte 0 + 4-byte big-endian schema id + Avro body).

Decoding either returns a frozen dataclass or raises :class:`DecodeError` whose ``reason``
is machine-readable, so the job can count and dead-letter bad records by reason.

>>> codec = EventCodec()
>>> from schemas.events import Event, EventType
>>> e = Event("e1", EventType.VIEW, "u1", 1_700_000_000_000, item_id="i1")
>>> payload = codec.encode(e)
>>> payload[:5]  # schema id 5: version 2 of the events subject, the newest
b'\x00\x00\x00\x00\x05'
>>> codec.decode(payload, now_ms=1_700_000_000_000) == e
True
>>> old = EventCodec(writer_version=1)  # what an old producer writes: schema id 1
>>> old.encode(e)[:5], codec.decode(old.encode(e), now_ms=1_700_000_000_000) == e
(b'\x00\x00\x00\x00\x01', True)
>>> try:
...     codec.decode(b"\x07garbage")
... except DecodeError as err:
...     print(err.reason.value)
bad_magic
"""

from __future__ import annotations

import io
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from schemas.events import EVENT_TYPE_OF, ITEM_EVENT_TYPES, Event, EventFields, EventType, Item, fields_of
from schemas.registry import DLQ_SUBJECT, EVENTS_SUBJECT, ITEMS_SUBJECT, SchemaRegistry, load_registry, schema_text

MAGIC_BYTE = 0
HEADER_SIZE = 5


class DecodeReason(StrEnum):
    """Why a payload was rejected; the value is what DLQ records and metrics carry."""

    TOO_LARGE = "too_large"
    TRUNCATED = "truncated"
    BAD_MAGIC = "bad_magic"
    UNKNOWN_SCHEMA = "unknown_schema"
    INVALID_BODY = "invalid_body"
    MISSING_FIELD = "missing_field"
    BAD_ID = "bad_id"
    BAD_VALUE = "bad_value"
    BAD_TIMESTAMP = "bad_timestamp"


class DecodeError(ValueError):
    """A payload that is not a usable record. ``reason`` says which check failed."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:
        return (DecodeError, (self.reason, self.detail))


@dataclass(frozen=True)
class Limits:
    """Bounds past which a record is rejected rather than learned from."""

    max_bytes: int = 64 * 1024
    max_id_length: int = 256
    #: 1990-01-01T00:00:00Z. Seconds sent as milliseconds land in January 1970, so anything
    #: before this is a unit mistake; real logs (MovieLens-100K is from 1997) stay above it.
    min_event_time_ms: int = 631_152_000_000
    #: How far ahead of the decoder's clock an event may claim to be.
    max_future_ms: int = 24 * 3600 * 1000


# Control characters make ids unprintable in logs and ambiguous as Redis key parts.
_BAD_ID_CHARS = re.compile(r"[\x00-\x1f\x7f]")
#: A leading byte-order mark (U+FEFF, or U+FFFE: swapped) does not survive the job: PyFlink's
#: embedded runtime (pemja) hands Java strings such as keyBy keys to Python with
#: ``PyUnicode_DecodeUTF16``, which drops a leading BOM (and byte-swaps the rest after U+FFFE),
#: so "\ufeffbob" would be written to bob's keys and "\ufffe" becomes "" and fails the job.
BOM_STARTS = ("\ufeff", "\ufffe")
# Compared for every event decoded: an Enum member looked up on its class costs ~0.15 us in Python 3.11.
_RATING, _IMPRESSION, _BLOCK = EventType.RATING, EventType.IMPRESSION, EventType.BLOCK


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _FramedCodec:
    """Framing and schema lookup shared by the event and item codecs.

    Reads every registered version of the subject into the newest one (``reader_id``); writes
    the newest too unless ``writer_version`` names an older version (``schema_id``).
    """

    subject: str

    def __init__(
        self, registry: SchemaRegistry | None = None, limits: Limits | None = None, writer_version: int | None = None
    ) -> None:
        self.registry = registry if registry is not None else load_registry()
        self.limits = limits or Limits()
        self.reader_id, self._reader = self.registry.latest(self.subject)
        self.schema_id, self._writer = (
            (self.reader_id, self._reader) if writer_version is None
            else self.registry.version(self.subject, writer_version)
        )
        self._header = bytes([MAGIC_BYTE]) + self.schema_id.to_bytes(4, "big")

    def _frame(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        schemaless_writer(buffer, self._writer, record)
        return buffer.getvalue()

    def _unframe(self, payload: bytes) -> dict[str, Any]:
        size = len(payload)
        if size > self.limits.max_bytes:
            raise DecodeError(DecodeReason.TOO_LARGE, f"{size} bytes > limit {self.limits.max_bytes}")
        if size < HEADER_SIZE:
            raise DecodeError(DecodeReason.TRUNCATED, f"{size} bytes is shorter than the 5-byte frame header")
        if payload[0] != MAGIC_BYTE:
            raise DecodeError(DecodeReason.BAD_MAGIC, f"first byte is {payload[0]}, expected {MAGIC_BYTE}")
        schema_id = int.from_bytes(payload[1:HEADER_SIZE], "big")
        writer = self.registry.writer_schema(schema_id)
        if writer is None:
            raise DecodeError(DecodeReason.UNKNOWN_SCHEMA, f"schema id {schema_id} is not registered")
        reader = None if schema_id == self.reader_id else self._reader
        body = io.BytesIO(payload)
        body.seek(HEADER_SIZE)
        try:
            record = schemaless_reader(body, writer, reader)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types for garbage
            if self._is_cut_short(payload, writer, reader):
                raise DecodeError(DecodeReason.TRUNCATED, f"Avro body ends early ({exc!r})") from None
            raise DecodeError(DecodeReason.INVALID_BODY, f"not a valid {self.subject} body: {exc!r}") from None
        if body.tell() != size:
            raise DecodeError(DecodeReason.INVALID_BODY, f"{size - body.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError(DecodeReason.INVALID_BODY, "body is not a record")
        return record

    def _is_cut_short(self, payload: bytes, writer: Any, reader: Any) -> bool:
        """True when ``payload`` is the start of a valid record (only on the error path).

        Zero bytes are a valid continuation of any Avro value (varint 0, empty string, first
        union branch, first enum symbol, 0.0), so a record cut short decodes once padded with
        zeros, while a corrupt body (bad enum index, bad UTF-8) still fails.
        """
        body = io.BytesIO(payload + bytes(self.limits.max_bytes))
        body.seek(HEADER_SIZE)
        try:
            schemaless_reader(body, writer, reader)
        except Exception:  # noqa: BLE001
            return False
        return True

    def _check_id(self, name: str, value: str | None) -> None:
        if not value:
            raise DecodeError(DecodeReason.MISSING_FIELD, f"{name} is missing or empty")
        if len(value) > self.limits.max_id_length:
            raise DecodeError(DecodeReason.BAD_ID, f"{name} is {len(value)} chars > {self.limits.max_id_length}")
        if _BAD_ID_CHARS.search(value):
            raise DecodeError(DecodeReason.BAD_ID, f"{name} contains control characters: {value!r}")
        if value.startswith(BOM_STARTS):
            raise DecodeError(DecodeReason.BAD_ID, f"{name} starts with a byte-order mark: {value!r}")


class EventCodec(_FramedCodec):
    """Encode and decode :class:`Event` for the ``events`` topic.

    Decodes frames of every version of ``events-value`` (ids 1 and 5 in ``registry.json``) into
    the newest schema. ``writer_version`` (default: the newest) picks the schema :meth:`encode`
    writes; an older one refuses events it cannot carry (``block``, ``category`` on version 1).

    >>> EventCodec(writer_version=1).encode(Event("e1", EventType.BLOCK, "u1", 1, item_id="i1"))
    Traceback (most recent call last):
    ...
    ValueError: event e1: version 1 of the events schema (id 1) has no event type 'block' (added in version 2)
    """

    subject = EVENTS_SUBJECT

    def __init__(
        self,
        registry: SchemaRegistry | None = None,
        limits: Limits | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        writer_version: int | None = None,
    ) -> None:
        super().__init__(registry, limits, writer_version)
        self._clock_ms = clock_ms
        self.writer_version = writer_version
        fields = {f["name"]: f for f in self._writer["fields"]}
        self._writer_types = frozenset(fields["type"]["type"]["symbols"])
        self._writer_has_category = "category" in fields
        self._newest = self.schema_id == self.reader_id

    def encode(self, event: Event) -> bytes:
        """Frame ``event`` with the writer schema's id; ValueError if that version cannot carry it."""
        if not self._newest:
            self.check_writable(event)
        return self._frame(event.to_avro())

    def check_writable(self, event: Event) -> None:
        """Raise ValueError when the writer schema (an older version) cannot carry ``event``."""
        where = f"event {event.event_id}: version {self.writer_version} of the events schema (id {self.schema_id})"
        if event.type.value not in self._writer_types:
            raise ValueError(f"{where} has no event type {event.type.value!r} (added in version 2)")
        if event.category is not None and not self._writer_has_category:
            raise ValueError(f"{where} has no category field (added in version 2)")

    def decode(self, payload: bytes, now_ms: int | None = None) -> Event:
        """Decode and validate one payload, or raise :class:`DecodeError`."""
        return Event.from_fields(self.decode_fields(payload, now_ms))

    def decode_fields(self, payload: bytes, now_ms: int | None = None) -> EventFields:
        """:meth:`decode`, as plain values (:data:`~schemas.events.EventFields`): what the job passes on."""
        record = self._unframe(payload)
        self._validate(record, self._clock_ms() if now_ms is None else now_ms)
        return fields_of(record)

    def validate(self, event: Event, now_ms: int | None = None) -> None:
        """Raise :class:`DecodeError` where :meth:`decode` would refuse ``event`` (checks without the bytes)."""
        self._validate(event.to_avro(), self._clock_ms() if now_ms is None else now_ms)

    def _validate(self, record: dict[str, Any], now_ms: int) -> None:
        self._check_id("event_id", record["event_id"])
        self._check_id("user_id", record["user_id"])
        event_type = EVENT_TYPE_OF.get(record["type"]) or EventType(record["type"])  # the call raises on others
        if event_type in ITEM_EVENT_TYPES or record["item_id"] is not None:
            self._check_id("item_id", record["item_id"])
        self._check_category(event_type, record)
        segment = (record["context"] or {}).get("segment")
        if segment and segment.startswith(BOM_STARTS):  # a keyBy key of the job (popularity)
            raise DecodeError(DecodeReason.BAD_ID, f"context.segment starts with a byte-order mark: {segment!r}")
        value = record["value"]
        if value is not None and not math.isfinite(value):
            raise DecodeError(DecodeReason.BAD_VALUE, f"value is {value}")
        if event_type is _RATING and value is None:
            raise DecodeError(DecodeReason.MISSING_FIELD, "rating events need a value")
        decision = record["decision"]
        if event_type is _IMPRESSION:
            if decision is None:
                raise DecodeError(DecodeReason.MISSING_FIELD, "impression events need a decision")
            self._check_id("decision.request_id", decision["request_id"])
            propensity = decision["propensity"]
            if not (0.0 < propensity <= 1.0):
                raise DecodeError(DecodeReason.BAD_VALUE, f"propensity {propensity} is outside (0, 1]")
        ts = record["event_time_ms"]
        if ts < self.limits.min_event_time_ms:
            raise DecodeError(DecodeReason.BAD_TIMESTAMP, f"event_time_ms {ts} is before 1990-01-01 (seconds, not ms?)")
        if ts > now_ms + self.limits.max_future_ms:
            raise DecodeError(DecodeReason.BAD_TIMESTAMP, f"event_time_ms {ts} is {ts - now_ms} ms in the future")

    def _check_category(self, event_type: EventType, record: dict[str, Any]) -> None:
        """A block names exactly one of item and category; only a block has a category (ADR 0010)."""
        category = record.get("category")  # absent when the reader is version 1 (a registry without v2)
        if event_type is _BLOCK:
            item_id = record["item_id"]
            if item_id is not None and category is not None:
                raise DecodeError(DecodeReason.BAD_VALUE, "a block names an item or a category, not both")
            if item_id is None:
                self._check_id("category", category)  # neither (or ""): missing_field
        elif category is not None:
            raise DecodeError(
                DecodeReason.BAD_VALUE,
                f"category is only for block events, not {event_type.value} (an item's category goes in context)",
            )


#: The versions of the events subject the job's JVM reader knows (``flink_jobs/java/.../EventFrames.java``).
JVM_EVENT_VERSIONS = (1, 2)


def jvm_event_schema_ids(registry: SchemaRegistry) -> dict[int, int]:
    """The events subject's schema ids the JVM may read, each with its version: the project's own schemas.

    An id qualifies only when the registry's schema under it is, field for field, version 1 or 2 as
    checked in; records framed with any other id go to :class:`EventCodec` alone.

    >>> jvm_event_schema_ids(load_registry())
    {1: 1, 5: 2}
    """
    project = load_registry()
    ids = {}
    for version in JVM_EVENT_VERSIONS:
        schema_id, _ = registry.version(EVENTS_SUBJECT, version)
        writer = registry.writer_schema(schema_id)
        if writer is not None and schema_text(writer) == schema_text(project.version(EVENTS_SUBJECT, version)[1]):
            ids[schema_id] = version
    return ids


class ItemCodec(_FramedCodec):
    """Encode and decode :class:`Item` for the compacted ``items`` topic."""

    subject = ITEMS_SUBJECT

    def encode(self, item: Item) -> bytes:
        """Frame ``item`` with the newest schema id of the items subject."""
        return self._frame(item.to_avro())

    def decode(self, payload: bytes) -> Item:
        """Decode one payload, or raise :class:`DecodeError`."""
        record = self._unframe(payload)
        self._check_id("item_id", record["item_id"])
        return Item.from_avro(record)


class DeadLetterCodec(_FramedCodec):
    r"""Encode and decode DLQ records (``dlq.avsc``): the original bytes kept whole, with the reason.

    >>> codec = DeadLetterCodec()
    >>> record = codec.encode(b"\x07junk", "bad_magic", "first byte is 7", "events", None, None, 1)
    >>> codec.decode(record)["original"]
    b'\x07junk'
    """

    subject = DLQ_SUBJECT
    #: A dead letter wraps an original of up to the broker's message size, plus a little.
    MAX_BYTES = 2 * 1024 * 1024

    def __init__(self, registry: SchemaRegistry | None = None, limits: Limits | None = None) -> None:
        super().__init__(registry, limits or Limits(max_bytes=self.MAX_BYTES))

    def encode(
        self,
        original: bytes,
        reason: str,
        detail: str,
        source_topic: str,
        source_partition: int | None,
        source_offset: int | None,
        failed_at_ms: int,
    ) -> bytes:
        """Frame one dead letter."""
        return self._frame({
            "original": original, "reason": reason, "detail": detail[:2000], "source_topic": source_topic,
            "source_partition": source_partition, "source_offset": source_offset, "failed_at_ms": failed_at_ms,
        })

    def decode(self, payload: bytes) -> dict[str, Any]:
        """The dead letter as a dict, or raise :class:`DecodeError`."""
        return self._unframe(payload)
