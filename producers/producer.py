"""The producer library: framed-Avro records to Kafka with delivery accounting.

Events are keyed by user (:class:`EventProducer`), catalogue entries by item, so the compacted
``items`` topic keeps the latest entry per item (:class:`ItemProducer`).

>>> from config import Settings
>>> DeliveryReport(produced=3, failed=0).ok
True
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from confluent_kafka import KafkaError, Message, Producer

from config import Settings
from schemas import Event, EventCodec, Item, ItemCodec, load_registry

log = logging.getLogger(__name__)

# Throughput-leaning defaults that still never lose or duplicate an acknowledged event:
# idempotence (acks=all) on, batches of up to 20 ms, lz4.
DEFAULT_PRODUCER_CONFIG: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
}


@dataclass
class DeliveryReport:
    """What the broker acknowledged: produced (acked) and failed, with failures by error."""

    produced: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return self.failed == 0


R = TypeVar("R")


class RecordProducer(Generic[R]):
    """Send records of one kind (or raw payloads) to one topic; subclasses say how to key and encode.

    Use as a context manager; leaving it flushes and the report counts every delivery.
    """

    def __init__(self, settings: Settings, topic: str, **config: Any) -> None:
        self.topic = topic
        self.report = DeliveryReport()
        self._producer = Producer(settings.kafka_config(**{**DEFAULT_PRODUCER_CONFIG, **config}))

    def __enter__(self) -> RecordProducer[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()

    def send(self, record: R) -> None:
        """Encode and enqueue one record."""
        raise NotImplementedError

    def send_raw(self, key: bytes | None, payload: bytes, partition: int | None = None) -> None:
        """Enqueue a payload as it is (producers of other encodings, tests of bad input), to ``partition`` if given."""
        placed = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(self.topic, value=payload, key=key, on_delivery=self._on_delivery, **placed)
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain
        self._producer.poll(0)

    def send_all(self, records: Iterable[R], rate: float | None = None) -> Iterator[int]:
        """Send every record, at most ``rate`` per second; yields how many were enqueued so far every 1,000."""
        pace = _Pacer(rate)
        sent = 0
        for record in records:
            self.send(record)
            sent += 1
            if sent % 1000 == 0:
                pace.wait(sent)
                yield sent
        yield sent

    def flush(self, timeout_s: float = 60.0) -> DeliveryReport:
        """Wait for every enqueued event's delivery report; count the ones left as failed."""
        left = self._producer.flush(timeout_s)
        if left:
            self.report.failed += left
            self.report.errors["not delivered before flush timeout"] += left
        return self.report

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is None:
            self.report.produced += 1
        else:
            self.report.failed += 1
            self.report.errors[err.str()] += 1


class EventProducer(RecordProducer[Event]):
    """Send :class:`schemas.Event` (or raw payloads) to the events topic, key = user id.

    ``event_schema`` is the version of the events schema written (default: the newest, 2);
    1 writes what producers before version 2 wrote and refuses block events (ValueError).
    """

    def __init__(
        self, settings: Settings, topic: str | None = None, *, event_schema: int | None = None, **config: Any
    ) -> None:
        super().__init__(settings, topic or settings.topic_events, **config)
        self.codec = EventCodec(load_registry(settings.schema_registry_url), writer_version=event_schema)

    def __enter__(self) -> EventProducer:
        return self

    def send(self, record: Event) -> None:
        """Encode and enqueue one event."""
        self.send_raw(record.user_id.encode(), self.codec.encode(record))


class ItemProducer(RecordProducer[Item]):
    """Send :class:`schemas.Item` catalogue entries to the compacted items topic, key = item id."""

    def __init__(self, settings: Settings, topic: str | None = None, **config: Any) -> None:
        super().__init__(settings, topic or settings.topic_items, **config)
        self.codec = ItemCodec(load_registry(settings.schema_registry_url))

    def __enter__(self) -> ItemProducer:
        return self

    def send(self, record: Item) -> None:
        """Encode and enqueue one catalogue entry."""
        self.send_raw(record.item_id.encode(), self.codec.encode(record))


class _Pacer:
    """Sleeps so that ``n`` sends take at least ``n / rate`` seconds."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.started = time.monotonic()

    def wait(self, sent: int) -> None:
        if not self.rate:
            return
        ahead = sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)
