"""How far behind the job is: consumer lag, score freshness and dead letters, measured and judged.

Used by ``pulse lag`` (one-shot or ``--watch``, thresholds as exit codes for probes) and by
``pulse exporter`` (the same numbers as Prometheus metrics). The arithmetic is pure and tested
without services; :class:`LagProbe` does the reading (Kafka offsets and records, Redis).

Definitions (README "Operating Pulse"):

* **lag in messages** of a partition = high watermark - the job's committed offset (consumer
  group ``settings.job_group_id``; the job commits on each completed checkpoint, so lag reads up
  to one checkpoint interval high). A group without an offset, or one behind the log start
  (retention deleted what it never read), counts from the log start: that is where it resumes.
* **lag in seconds** = event time of the newest produced record (offset high-1) - event time of
  the newest consumed one (committed-1), never negative, 0 when nothing is pending. When
  nothing was consumed yet, the oldest pending record stands in for the newest consumed one.
  A record that does not decode (a dead letter) has no event time: the nearest one that does,
  within :data:`WINDOW` records, is used instead.
* **score freshness** = now - ``et`` of per-user ``recs`` / ``counts`` keys found by ``SCAN``;
  the newest of the sample says whether scores are being written at all.
* **dead letters**: committed records on the DLQ topic, in total and in the last window.

>>> lag_messages(committed=90, low=0, high=100), lag_messages(committed=None, low=40, high=100)
(10, 60)
>>> lag_seconds(newest_produced_ms=10_000, newest_consumed_ms=7_500, pending=10)
2.5
>>> lag_seconds(newest_produced_ms=10_000, newest_consumed_ms=7_500, pending=0)
0.0
"""

from __future__ import annotations

import bisect
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from confluent_kafka import Consumer, Message

    from config import Settings

__all__ = [
    "METRIC_NAMES",
    "DeadLetters",
    "Freshness",
    "LagProbe",
    "LagReport",
    "PartitionLag",
    "ReadWindow",
    "Thresholds",
    "breaches",
    "freshness",
    "lag_messages",
    "lag_seconds",
    "metric_families",
    "offsets_to_read",
]


# ---------------------------------------------------------------------------------------------
# Pure part
# ---------------------------------------------------------------------------------------------


def _start(committed: int | None, low: int) -> int:
    """Where the job resumes: its committed offset, or the log start when it has none (or it was deleted)."""
    return low if committed is None or committed < low else committed


def lag_messages(committed: int | None, low: int, high: int) -> int:
    """Records in ``[resume offset, high)``: what the job has not committed yet.

    >>> lag_messages(committed=100, low=0, high=100), lag_messages(committed=5, low=20, high=30)
    (0, 10)
    >>> lag_messages(committed=None, low=0, high=0)
    0
    """
    return max(high - _start(committed, low), 0)


#: How many records around a boundary are read to find one that decodes (dead letters do not).
WINDOW = 50


@dataclass(frozen=True, slots=True)
class ReadWindow:
    """Offsets ``[start, end)`` of one partition to read; the event time of the ``pick`` decodable record wins."""

    start: int
    end: int
    pick: str  # "last" | "first"


def offsets_to_read(committed: int | None, low: int, high: int) -> tuple[ReadWindow | None, ReadWindow | None]:
    """Where the event times of the lag in seconds come from: (newest consumed, newest produced).

    The newest consumed record is the last one that decodes before the committed offset; when
    there is none (no offset yet, or it was deleted) the oldest pending record stands in. The
    newest produced is the last one that decodes before the high watermark. Each is looked for
    within :data:`WINDOW` records (a malformed record has no event time). ``None``: nothing pending.

    >>> offsets_to_read(committed=90, low=0, high=100)
    (ReadWindow(start=40, end=90, pick='last'), ReadWindow(start=50, end=100, pick='last'))
    >>> offsets_to_read(committed=None, low=40, high=60)
    (ReadWindow(start=40, end=60, pick='first'), ReadWindow(start=40, end=60, pick='last'))
    >>> offsets_to_read(committed=100, low=0, high=100)
    (None, None)
    """
    if lag_messages(committed, low, high) == 0:
        return None, None
    produced = ReadWindow(max(low, high - WINDOW), high, "last")
    if committed is not None and committed > low:
        return ReadWindow(max(low, committed - WINDOW), committed, "last"), produced
    return ReadWindow(low, min(low + WINDOW, high), "first"), produced


def lag_seconds(newest_produced_ms: int | None, newest_consumed_ms: int | None, pending: int) -> float:
    """Event-time distance between the newest produced and the newest consumed record, in seconds.

    0 when nothing is pending or a time is unknown; never negative (event time is not ordered
    within a partition, so the newest *produced* record can be older than the newest consumed).

    >>> lag_seconds(5_000, 9_000, pending=3), lag_seconds(None, 9_000, pending=3)
    (0.0, 0.0)
    """
    if pending <= 0 or newest_produced_ms is None or newest_consumed_ms is None:
        return 0.0
    return max(newest_produced_ms - newest_consumed_ms, 0) / 1000.0


@dataclass(frozen=True, slots=True)
class PartitionLag:
    """One partition of the events topic, as the job's consumer group sees it."""

    partition: int
    committed: int | None
    low: int
    high: int
    newest_produced_ms: int | None = None
    newest_consumed_ms: int | None = None

    @property
    def lag_messages(self) -> int:
        """Records not committed by the job yet."""
        return lag_messages(self.committed, self.low, self.high)

    @property
    def lag_seconds(self) -> float:
        """Event-time lag, seconds."""
        return lag_seconds(self.newest_produced_ms, self.newest_consumed_ms, self.lag_messages)

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape of one partition."""
        return {
            "partition": self.partition,
            "committed_offset": self.committed,
            "low_watermark": self.low,
            "high_watermark": self.high,
            "lag_messages": self.lag_messages,
            "lag_seconds": self.lag_seconds,
            "newest_produced_event_time_ms": self.newest_produced_ms,
            "newest_consumed_event_time_ms": self.newest_consumed_ms,
        }


@dataclass(frozen=True, slots=True)
class Freshness:
    """Ages (now - event time of the scores) of a sample of per-user score keys, in ms."""

    sampled: int
    newest_age_ms: int | None = None
    median_age_ms: int | None = None
    oldest_age_ms: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "sampled_keys": self.sampled,
            "newest_age_ms": self.newest_age_ms,
            "median_age_ms": self.median_age_ms,
            "oldest_age_ms": self.oldest_age_ms,
        }


def freshness(event_times_ms: Iterable[int], now_ms: int) -> Freshness:
    """Age statistics of scores written for these event times (ages below 0 count as 0).

    >>> freshness([9_000, 7_000, 10_500], now_ms=10_000)
    Freshness(sampled=3, newest_age_ms=0, median_age_ms=1000, oldest_age_ms=3000)
    >>> freshness([], now_ms=10_000)
    Freshness(sampled=0, newest_age_ms=None, median_age_ms=None, oldest_age_ms=None)
    """
    ages = sorted(max(now_ms - et, 0) for et in event_times_ms)
    if not ages:
        return Freshness(0)
    return Freshness(len(ages), ages[0], ages[(len(ages) - 1) // 2], ages[-1])


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """Committed records on the dead-letter topic."""

    total: int
    recent: int
    window_s: float

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {"total": self.total, "recent": self.recent, "window_s": self.window_s}


@dataclass(frozen=True, slots=True)
class LagReport:
    """One measurement of everything ``pulse lag`` shows."""

    topic: str
    group: str
    measured_at_ms: int
    partitions: tuple[PartitionLag, ...]
    freshness: Freshness
    dead_letters: DeadLetters
    dlq_topic: str = "events.dlq"

    @property
    def lag_messages(self) -> int:
        """Total lag over partitions, records."""
        return sum(p.lag_messages for p in self.partitions)

    @property
    def lag_seconds(self) -> float:
        """The worst partition's event-time lag, seconds."""
        return max((p.lag_seconds for p in self.partitions), default=0.0)

    def to_json(self) -> dict[str, Any]:
        """The ``pulse lag --json`` document."""
        return {
            "topic": self.topic,
            "group": self.group,
            "measured_at_ms": self.measured_at_ms,
            "partitions": [p.to_json() for p in self.partitions],
            "total": {
                "lag_messages": self.lag_messages,
                "lag_seconds": self.lag_seconds,
                "committed_offset": sum(_start(p.committed, p.low) for p in self.partitions),
                "high_watermark": sum(p.high for p in self.partitions),
            },
            "freshness": self.freshness.to_json(),
            "dead_letters": {"topic": self.dlq_topic, **self.dead_letters.to_json()},
        }


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Limits given by flags; ``None`` = not checked."""

    max_lag_seconds: float | None = None
    max_lag_messages: int | None = None
    max_freshness_ms: int | None = None


def breaches(report: LagReport, limits: Thresholds) -> list[str]:
    """One line per limit the report exceeds (empty: healthy).

    Freshness is judged on the newest sampled score; with a limit given and no scores in Redis
    at all, that is a breach too (a probe cannot call that fresh).

    >>> p = PartitionLag(0, committed=90, low=0, high=100, newest_produced_ms=20_000, newest_consumed_ms=5_000)
    >>> r = LagReport("events", "g", 30_000, (p,), freshness([25_000], 30_000), DeadLetters(0, 0, 60))
    >>> breaches(r, Thresholds(max_lag_seconds=10, max_lag_messages=10, max_freshness_ms=1000))
    ['lag 15.0 s > 10 s', 'score freshness 5000 ms > 1000 ms']
    """
    out = []
    if limits.max_lag_seconds is not None and report.lag_seconds > limits.max_lag_seconds:
        out.append(f"lag {report.lag_seconds:.1f} s > {limits.max_lag_seconds:g} s")
    if limits.max_lag_messages is not None and report.lag_messages > limits.max_lag_messages:
        out.append(f"lag {report.lag_messages} messages > {limits.max_lag_messages}")
    if limits.max_freshness_ms is not None:
        newest = report.freshness.newest_age_ms
        if newest is None:
            out.append("score freshness unknown: no per-user scores in Redis")
        elif newest > limits.max_freshness_ms:
            out.append(f"score freshness {newest} ms > {limits.max_freshness_ms} ms")
    return out


#: Every metric ``pulse exporter`` publishes (names as they appear in a scrape).
METRIC_NAMES = (
    "pulse_lag_messages",
    "pulse_lag_seconds",
    "pulse_consumer_committed_offset",
    "pulse_log_end_offset",
    "pulse_score_freshness_seconds",
    "pulse_score_keys_sampled",
    "pulse_dlq_records_total",
    "pulse_dlq_records_recent",
    "pulse_exporter_up",
)


def metric_families(report: LagReport | None) -> Iterator[Any]:
    """Prometheus metric families of one report (``None``: the measurement failed, only ``up`` = 0).

    >>> p = PartitionLag(0, committed=90, low=0, high=100, newest_produced_ms=20_000, newest_consumed_ms=5_000)
    >>> r = LagReport("events", "g", 30_000, (p,), freshness([25_000], 30_000), DeadLetters(7, 2, 60))
    >>> values = {s.name: s.value for f in metric_families(r) for s in f.samples}
    >>> values  # doctest: +NORMALIZE_WHITESPACE
    {'pulse_lag_messages': 10.0, 'pulse_lag_seconds': 15.0, 'pulse_consumer_committed_offset': 90.0,
     'pulse_log_end_offset': 100.0, 'pulse_score_freshness_seconds': 5.0, 'pulse_score_keys_sampled': 1.0,
     'pulse_dlq_records_total': 7.0, 'pulse_dlq_records_recent': 2.0, 'pulse_exporter_up': 1.0}
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    up = GaugeMetricFamily("pulse_exporter_up", "1 if the last measurement of Kafka and Redis succeeded")
    up.add_metric([], 0.0 if report is None else 1.0)
    if report is None:
        yield up
        return
    labels = ["topic", "group", "partition"]

    def per_partition(name: str, doc: str, value: Any) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=labels)
        for p in report.partitions:
            family.add_metric([report.topic, report.group, str(p.partition)], float(value(p)))
        return family

    yield per_partition(
        "pulse_lag_messages", "Records of the events topic the job has not committed", lambda p: p.lag_messages
    )
    yield per_partition(
        "pulse_lag_seconds", "Event time of the newest produced minus newest consumed record", lambda p: p.lag_seconds
    )
    yield per_partition(
        "pulse_consumer_committed_offset", "Offset the job resumes from (committed, else log start)",
        lambda p: _start(p.committed, p.low),
    )
    yield per_partition("pulse_log_end_offset", "High watermark of the events topic", lambda p: p.high)
    fresh = GaugeMetricFamily(
        "pulse_score_freshness_seconds", "now - event time of sampled per-user scores", labels=["stat"]
    )
    for stat, age in (("newest", report.freshness.newest_age_ms), ("median", report.freshness.median_age_ms),
                      ("oldest", report.freshness.oldest_age_ms)):
        if age is not None:
            fresh.add_metric([stat], age / 1000.0)
    yield fresh
    sampled = GaugeMetricFamily("pulse_score_keys_sampled", "Per-user score keys the freshness sample found")
    sampled.add_metric([], float(report.freshness.sampled))
    yield sampled
    dlq = CounterMetricFamily("pulse_dlq_records", "Committed records on the dead-letter topic", labels=["topic"])
    dlq.add_metric([report.dlq_topic], float(report.dead_letters.total))
    yield dlq
    recent = GaugeMetricFamily(
        "pulse_dlq_records_recent", "Dead letters timestamped within the window", labels=["topic", "window_s"]
    )
    recent.add_metric([report.dlq_topic, f"{report.dead_letters.window_s:g}"], float(report.dead_letters.recent))
    yield recent
    yield up


# ---------------------------------------------------------------------------------------------
# I/O part
# ---------------------------------------------------------------------------------------------


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
        for key in keys:
            pipe.hget(cast(str, key), "et")  # redis-py takes bytes keys as they came from SCAN
        times = [int(et) for et in pipe.execute() if et is not None]
        return freshness(times, _now_ms())


def _sample_score_keys(keys: Iterable[bytes | str], limit: int) -> Iterator[bytes | str]:
    """Score keys (``…}:recs`` / ``…}:counts``) among ``keys``, at most ``limit``.

    >>> list(_sample_score_keys([b"p:user:{a}:recs", b"p:user:{a}:session", b"p:user:{b}:counts"], 5))
    [b'p:user:{a}:recs', b'p:user:{b}:counts']
    """
    taken = 0
    for key in keys:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if text.endswith(("}:recs", "}:counts")):
            yield key
            taken += 1
            if taken >= limit:
                return

