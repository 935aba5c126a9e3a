"""Stage: bytes from Kafka -> validated :class:`schemas.Event`, or a dead letter. Nothing is dropped.

Most events never reach it: the JVM reads those the codec accepts without a doubt
(``EventDecoder.java``, ``pipeline.decode_in_jvm``) and hands this stage the rest (bad input, other
schema ids), so every dead letter's reason is the codec's (``schemas/codec.py``).
"""

from __future__ import annotations

import pickle
import struct
import time
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from flink_jobs.batching import PACKED, pack_messages, read_batch
from flink_jobs.messages import DeadLetterCounts, event_bytes
from flink_jobs.routing import TO_MODEL, message
from flink_jobs.runtime import split_position
from schemas import DeadLetterCodec, DecodeError, DecodeReason, EventCodec, Limits, ServedListCodec, load_registry

#: Dead letters (framed ``dlq.avsc`` records), typed as raw bytes for the Kafka sink.
DEAD_LETTERS = OutputTag("dead-letters", Types.PRIMITIVE_ARRAY(Types.BYTE()))

#: Per batch with dead letters: their count by reason, packed for the model stage (key ``dlq``).
DEAD_LETTER_COUNTS = OutputTag("dead-letter-counts", PACKED)

#: The model stage's key for the dead-letter counts (the Redis key ``<prefix>:model:dlq``).
DLQ_KEY = "dlq"

#: A decoded event with what the JVM needs beside it: ``(Row(user_id, event), event_time_ms)``; the
#: event is bytes the user stage reads with :func:`~flink_jobs.messages.event_of` (only Java reads them between).
#: The JVM takes the event time from field 1 for watermarks, then keys on the Row's first field,
#: so neither step is one more Python call per event (``pipeline.with_event_time``).
DECODED = Types.TUPLE([Types.ROW([Types.STRING(), Types.PICKLED_BYTE_ARRAY()]), Types.LONG()])

_LENGTH = struct.Struct(">I")
_TIME = struct.Struct(">q")


class DeadLetters:
    """A decoding stage's dead letters: each framed for the DLQ topic and counted by reason.

    A metric per reason, and per batch a message for the model stage's ``model:dlq``.
    """

    def __init__(self, source_topic: str, registry: Any, metrics: Any) -> None:
        self.source_topic = source_topic
        self.codec = DeadLetterCodec(registry)
        self.rejected = {
            reason: metrics.add_group("reason", reason.value).counter("dead_letters") for reason in DecodeReason
        }
        self.by_reason: dict[str, int] = {}

    def reject(self, err: DecodeError, value: bytes, partition: int, offset: int) -> bytes:
        """The DLQ record of ``value`` (the original bytes whole, the reason, where it was read)."""
        self.rejected[err.reason].inc()
        self.by_reason[err.reason.value] = self.by_reason.get(err.reason.value, 0) + 1
        return self.codec.encode(value, err.reason.value, err.detail, self.source_topic, partition, offset,
                                 time.time_ns() // 1_000_000)

    def counts(self) -> bytes | None:
        """The dead letters since the last call by reason, packed for the model stage (``None``: none)."""
        if not self.by_reason:
            return None
        counts = DeadLetterCounts(self.by_reason, time.time_ns() // 1_000_000)
        self.by_reason = {}
        return pack_messages([message(TO_MODEL, DLQ_KEY, counts)])


class DecodeEvents(ProcessFunction):
    """Decode a micro-batch of payloads (``flink_jobs/batching.py``) in one call.

    Good events go out packed, one ``bytes`` per batch, which the JVM unpacks into :data:`DECODED`
    (``UnpackEvents.java``); bad ones go to :data:`DEAD_LETTERS` with the reason and source position.
    Input: ``Row("", batch)`` of values read with ``kafka_source(..., with_position=True)``
    (partition + offset first).
    """

    def __init__(self, source_topic: str, schema_registry_url: str | None, limits: Limits) -> None:
        self.source_topic = source_topic
        self.schema_registry_url = schema_registry_url
        self.limits = limits

    def open(self, runtime_context: RuntimeContext) -> None:
        registry = load_registry(self.schema_registry_url)
        self.events = EventCodec(registry, self.limits)
        metrics = runtime_context.get_metrics_group()
        self.decoded = metrics.counter("events_decoded")  # one call into the JVM per batch
        self.dead_letters = DeadLetters(self.source_topic, registry, metrics)

    def keyed(self, value: bytes) -> tuple[str, bytes, int] | None:
        """``(user id, bytes for the user stage, event time)`` of a payload (``DecodeError``: bad; ``None``: skip).

        An event goes on as its checked fields (:func:`~flink_jobs.messages.event_bytes`), not built as an object.
        """
        fields = self.events.decode_fields(value)
        return fields[2], event_bytes(fields), fields[3]  # user id, event time (EventFields' order)

    def process_element(self, batch: Row, ctx: ProcessFunction.Context):  # type: ignore[no-untyped-def]
        _, records = read_batch(batch[1])
        parts = [b""]
        good = kept = 0
        for _, positioned in records:
            partition, offset, value = split_position(positioned)
            try:
                keyed = self.keyed(value)
            except DecodeError as err:
                yield DEAD_LETTERS, self.dead_letters.reject(err, value, partition, offset)
                continue
            good += 1
            if keyed is None:
                continue
            user, decoded, time_ms = keyed[0].encode(), keyed[1], keyed[2]
            parts.append(_LENGTH.pack(len(user)) + user + _LENGTH.pack(len(decoded)) + decoded + _TIME.pack(time_ms))
            kept += 1
        if good:
            self.decoded.inc(good)
        if kept:
            parts[0] = _LENGTH.pack(kept)
            yield b"".join(parts)
        if (counts := self.dead_letters.counts()) is not None:
            yield DEAD_LETTER_COUNTS, counts


class DecodeServed(DecodeEvents):
    """Decode a micro-batch of served lists (``served.avsc``) for attribution, in one call.

    Only lists served under an experiment go on (the others credit no variant), packed like
    :class:`DecodeEvents` output with event time 0: a list's server time must not move the
    events' watermark (replayed events can be older than the lists), and nothing downstream
    reads a list's Flink timestamp. Bad records go to the DLQ with the reason and position.
    """

    def __init__(self, source_topic: str, schema_registry_url: str | None) -> None:
        super().__init__(source_topic, schema_registry_url, Limits())

    def open(self, runtime_context: RuntimeContext) -> None:
        registry = load_registry(self.schema_registry_url)
        self.codec = ServedListCodec(registry, self.limits)
        metrics = runtime_context.get_metrics_group()
        self.decoded = metrics.counter("served_lists_decoded")
        self.dead_letters = DeadLetters(self.source_topic, registry, metrics)

    def keyed(self, value: bytes) -> tuple[str, bytes, int] | None:
        served = self.codec.decode(value)
        if served.experiment is None or served.variant is None:
            return None
        return served.user_id, pickle.dumps(served, protocol=pickle.HIGHEST_PROTOCOL), 0
