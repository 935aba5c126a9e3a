"""The I/O part of ``pulse lag``: :class:`LagProbe` reads Kafka offsets and records and Redis score times.

It turns what it reads into the pure values of :mod:`pulse.lag.measure`; nothing is judged here.
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from pulse.lag.measure import (
    WINDOW,
    DeadLetters,
    Freshness,
    LagReport,
    PartitionLag,
    ReadWindow,
    freshness,
    offsets_to_read,
)
from schemas.redis_values import event_time_of, is_compact

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from config import Settings

__all__ = ["LagProbe"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _event_time_ms(message: Message) -> int | None:
    """The record's ``event_time_ms``; ``None`` when it does not decode (a dead letter has no event time)."""
    from schemas import DecodeError, EventCodec

    global _CODEC
    if _CODEC is None:
        _CODEC = EventCodec()
    try:
        return int(_CODEC.decode(message.value() or b"").event_time_ms)
    except DecodeError:
        return None


def _where(message: Message) -> tuple[int, int]:
    """(partition, offset) of a consumed message or event (-1 where the client has none)."""
    partition, offset = message.partition(), message.offset()
    return (-1 if partition is None else partition), (-1 if offset is None else offset)


_CODEC: Any = None


@dataclass
class _DlqState:
    positions: dict[int, int] = field(default_factory=dict)
    total: int = 0
    timestamps: deque[int] = field(default_factory=deque)


class LagProbe:
    """Reads offsets and records from Kafka and score times from Redis; one instance per command.

    Never joins or commits to the job's group: committed offsets are fetched with an unsubscribed
    consumer (an OffsetFetch request), records are read by manual assignment.
    """

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        import redis as redis_lib
        from confluent_kafka import Consumer

        from schemas.redis_keys import RedisKeys

        self.settings = settings
        self.timeout_s = timeout_s
        common = {"enable.auto.commit": False, "enable.auto.offset.store": False, "socket.timeout.ms": 10_000}
        self._group = Consumer(settings.kafka_config(**{"group.id": settings.job_group_id, **common}))
        reader_group = f"pulse-lag-{uuid.uuid4().hex[:8]}"  # never commits, so it never exists on the broker
        self._reader = Consumer(settings.kafka_config(**{
            "group.id": reader_group, **common, "queued.max.messages.kbytes": 1024,
            "isolation.level": "read_committed", "enable.partition.eof": True,
        }))
        self._dlq = Consumer(settings.kafka_config(**{
            "group.id": reader_group, **common, "isolation.level": "read_committed", "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
        }))
        self._dlq_state = _DlqState()
        self._redis = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=timeout_s,
                                               **settings.redis_client_kwargs())
        self._keys = RedisKeys(settings.redis_prefix)

    def close(self) -> None:
        """Close the Kafka and Redis clients."""
        for consumer in (self._group, self._reader, self._dlq):
            consumer.close()
        self._redis.close()

    def __enter__(self) -> LagProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def measure(self) -> LagReport:
        """Everything, now. Raises ``KafkaException`` / ``redis.RedisError`` when a service does not answer."""
        partitions = self.partitions()
        return LagReport(
            topic=self.settings.topic_events,
            group=self.settings.job_group_id,
            measured_at_ms=_now_ms(),
            partitions=partitions,
            freshness=self.freshness(),
            dead_letters=self.dead_letters(),
            dlq_topic=self.settings.topic_dlq,
        )

    # -- Kafka: lag ------------------------------------------------------------------------------

    def _partition_ids(self, consumer: Consumer, topic: str) -> list[int]:
        from confluent_kafka import KafkaError, KafkaException

        meta = consumer.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            if meta is not None and meta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return []
            raise KafkaException(meta.error if meta is not None else KafkaError(KafkaError._UNKNOWN_TOPIC))
        return sorted(meta.partitions)

    def partitions(self) -> tuple[PartitionLag, ...]:
        """Committed offset, watermarks and the event times at both ends of the pending range, per partition."""
        from confluent_kafka import TopicPartition

        topic = self.settings.topic_events
        ids = self._partition_ids(self._group, topic)
        committed = {
            tp.partition: (tp.offset if tp.offset >= 0 else None)
            for tp in self._committed([TopicPartition(topic, p) for p in ids])
        }
        marks = {p: self._group.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout_s, cached=False)
                 for p in ids}
        to_read = {p: offsets_to_read(committed[p], *marks[p]) for p in ids}
        consumed = self._read_event_times(topic, {p: o[0] for p, o in to_read.items() if o[0] is not None})
        produced = self._read_event_times(topic, {p: o[1] for p, o in to_read.items() if o[1] is not None})
        return tuple(
            PartitionLag(p, committed[p], marks[p][0], marks[p][1], produced.get(p), consumed.get(p)) for p in ids
        )

    def _committed(self, partitions: list[Any]) -> list[Any]:
        """The group's committed offsets, retrying transient broker errors within ``timeout_s``.

        Transient: a coordinator moving or, on a new cluster, ``__consumer_offsets`` still being created.
        """
        from confluent_kafka import KafkaError, KafkaException

        coordinator = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
                       KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError._WAIT_COORD, KafkaError._TIMED_OUT}
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                return list(self._group.committed(partitions, timeout=self.timeout_s))
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                transient = error is not None and (error.retriable() or error.code() in coordinator)
                if not transient or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _read_event_times(self, topic: str, windows: dict[int, ReadWindow]) -> dict[int, int]:
        """Per partition, the event time of the first or last decodable record of its window."""
        from confluent_kafka import KafkaError, TopicPartition

        if not windows:
            return {}
        assignment = [TopicPartition(topic, p, w.start) for p, w in windows.items()]
        self._reader.assign(assignment)
        found: dict[int, int] = {}
        done: set[int] = set()
        deadline = time.monotonic() + self.timeout_s
        try:
            while len(done) < len(windows) and time.monotonic() < deadline:
                for message in self._reader.consume(num_messages=WINDOW * len(windows), timeout=0.2):
                    (p, offset), error = _where(message), message.error()
                    window = windows.get(p)
                    if window is None or p in done:
                        continue
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            done.add(p)
                        continue
                    if offset < window.end:
                        event_time = _event_time_ms(message)
                        if event_time is not None:
                            found[p] = event_time
                            if window.pick == "first":
                                done.add(p)
                    if offset >= window.end - 1:
                        done.add(p)
                    if p in done:
                        self._reader.pause([TopicPartition(topic, p)])
        finally:
            self._reader.resume(assignment)  # pausing outlives the assignment in librdkafka
            self._reader.unassign()
        return found

    # -- Kafka: dead letters ---------------------------------------------------------------------

    def dead_letters(self) -> DeadLetters:
        """Committed DLQ records: total and timestamped within ``settings.dlq_window_s``.

        Counted by reading (``read_committed``), not from offsets: an exactly-once sink leaves
        transaction markers and aborted records in the offset range. The probe keeps its
        position, so repeated calls (``--watch``, the exporter) only read what is new.
        """
        from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

        topic, state = self.settings.topic_dlq, self._dlq_state
        ids = self._partition_ids(self._group, topic)  # the DLQ consumer's fetches would delay metadata calls
        new = [p for p in ids if p not in state.positions]
        if new:
            self._dlq.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in new])
            for p in new:
                state.positions[p] = -1
        pending = set()
        for p in ids:
            _, high = self._group.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout_s, cached=False)
            if state.positions[p] < high:
                pending.add(p)
        deadline = time.monotonic() + self.timeout_s
        while pending and time.monotonic() < deadline:
            for message in self._dlq.consume(num_messages=500, timeout=0.2):
                (p, offset), error = _where(message), message.error()
                if p not in state.positions:
                    continue
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        state.positions[p] = max(state.positions[p], offset)
                        pending.discard(p)
                    continue
                state.positions[p] = offset + 1
                state.total += 1
                kind, ts = message.timestamp()
                bisect.insort(state.timestamps, ts if kind and ts > 0 else _now_ms())
        cutoff = _now_ms() - int(self.settings.dlq_window_s * 1000)
        while state.timestamps and state.timestamps[0] < cutoff:
            state.timestamps.popleft()
        return DeadLetters(state.total, len(state.timestamps), self.settings.dlq_window_s)

    # -- Redis: freshness ------------------------------------------------------------------------

    def freshness(self) -> Freshness:
        """Ages of up to ``settings.freshness_sample`` per-user ``recs`` / ``counts`` values (SCAN order)."""
        keys = list(_sample_score_keys(
            self._redis.scan_iter(match=f"{self._keys.prefix}:user:*", count=1000), self.settings.freshness_sample
        ))
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:  # redis-py takes bytes keys as they came from SCAN
            if _is_user_record(key):
                pipe.getrange(cast(str, key), 0, 8)  # format 2: the event time is in the header
            else:
                pipe.hget(cast(str, key), "et")
        times = [_event_time(reply) for reply in pipe.execute() if reply is not None]
        return freshness([t for t in times if t is not None], _now_ms())


def _is_user_record(key: bytes | str) -> bool:
    return key.endswith(b"}" if isinstance(key, bytes) else "}")


def _event_time(reply: bytes | str) -> int | None:
    """The event time of a format-1 ``et`` field or a format-2 header.

    >>> _event_time(b"1700000000000"), _event_time(bytes([2]) + (1700000000000).to_bytes(8, "big"))
    (1700000000000, 1700000000000)
    """
    if is_compact(reply):
        return event_time_of(reply)  # type: ignore[arg-type]
    try:
        return int(reply)
    except ValueError:
        return None


def _sample_score_keys(keys: Iterable[bytes | str], limit: int) -> Iterator[bytes | str]:
    """Score keys (format 2's ``…}``; format 1's ``…}:recs`` / ``…}:counts``) among ``keys``, at most ``limit``.

    >>> list(_sample_score_keys([b"p:user:{a}:recs", b"p:user:{a}:session", b"p:user:{b}:counts", b"p:user:{c}"], 5))
    [b'p:user:{a}:recs', b'p:user:{b}:counts', b'p:user:{c}']
    """
    taken = 0
    for key in keys:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if text.endswith(("}:recs", "}:counts", "}")):
            yield key
            taken += 1
            if taken >= limit:
                return
