"""A bounded read of an events topic: every partition from its first offset to its end offset at the start.

``pulse eval bandit --data kafka:TOPIC`` reads Pulse's own logged decisions with it. Records
appended after the read started are left out, so the read ends even while serving keeps logging,
and the same topic read twice gives the same data until new records arrive. Records are decoded
with the events' codec (framed Avro, ``schemas/event.avsc``); a record that does not decode is
counted and skipped, as the job dead-letters it. The reader never commits offsets (its group id is
random and unused afterwards), so it does not disturb the job's consumer group.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from config import Settings
from schemas import DecodeError, Event, EventCodec, load_registry

__all__ = ["TopicReadError", "TopicReader"]


class TopicReadError(RuntimeError):
    """The topic cannot be read (one line, for the command's error)."""


class TopicReader:
    """Reads ``topic`` from its beginning to its end offsets when the reader was opened."""

    def __init__(self, settings: Settings, topic: str, timeout_s: float = 10.0) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.undecodable = 0
        self._codec = EventCodec(load_registry(settings.schema_registry_url))
        self._consumer = Consumer(settings.kafka_config(**{
            "group.id": f"pulse-eval-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
            "enable.auto.offset.store": False, "enable.partition.eof": True, "isolation.level": "read_committed",
        }))
        try:
            #: Partition -> (first offset, end offset) of the records to read.
            self.ranges = self._ranges()
        except Exception:
            self._consumer.close()
            raise

    @property
    def total(self) -> int:
        """Records to read (undecodable ones included)."""
        return sum(end - start for start, end in self.ranges.values())

    def _ranges(self) -> dict[int, tuple[int, int]]:
        try:
            topics = self._consumer.list_topics(timeout=self.timeout_s).topics  # no topic named: no auto-creation
        except KafkaException as exc:
            raise TopicReadError(f"could not list the topics: {_text(exc)}") from None
        meta = topics.get(self.topic)
        if meta is None:
            raise TopicReadError(f"topic {self.topic!r} does not exist")
        ranges = {}
        for partition in sorted(meta.partitions):
            try:
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=self.timeout_s
                )
            except KafkaException as exc:
                raise TopicReadError(f"could not read the offsets of {self.topic}[{partition}]: {_text(exc)}") from None
            if high > low:
                ranges[partition] = (low, high)
        return ranges

    def events(self, on_record: Callable[[], None] | None = None) -> Iterator[Event]:
        """The decodable events, partition by partition in offset order (interleaved as fetched).

        ``on_record`` is called once per record read (a progress bar's hook).
        """
        pending = {p: end for p, (_, end) in self.ranges.items()}
        if not pending:
            return
        self._consumer.assign([TopicPartition(self.topic, p, start) for p, (start, _) in self.ranges.items()])
        quiet_since = time.monotonic()
        while pending:
            messages = self._consumer.consume(num_messages=1000, timeout=0.5)
            if messages:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self.timeout_s:
                raise TopicReadError(
                    f"no records from {self.topic} for {self.timeout_s:g} s with {len(pending)} partition(s) unread"
                )
            for message in messages:
                partition, offset, error = message.partition(), message.offset(), message.error()
                if partition not in pending or partition is None or offset is None:
                    continue
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise TopicReadError(f"reading {self.topic}[{partition}] failed: {error.str()}")
                if error is None and offset < pending[partition]:
                    if on_record is not None:
                        on_record()
                    event = self._decode(message.value())
                    if event is not None:
                        yield event
                if error is not None or offset >= pending[partition] - 1:  # at the end (EOF: a transaction's tail)
                    del pending[partition]

    def _decode(self, payload: bytes | None) -> Event | None:
        try:
            return self._codec.decode(payload or b"")
        except DecodeError:
            self.undecodable += 1
            return None

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)
