"""Log records nobody waits for (served lists): queued on the request path, produced in batches.

The collector's producer reports every delivery to Python (an impression's outcome is counted
per record, the events' 202 waits for it); for a log written on every recommendations answer,
one Python callback per record on the poll thread, and one produce call and broker request per
10 ms, cost more CPU than building the record (``bench/serving.py --served-log off,on``). So
logs have their own producer, configured like the collector's (idempotent, ``acks=all``, lz4)
but reporting only failures (``delivery.report.only.error``), fed one ``produce_batch`` per
topic every ``flush_s`` (50 ms) or ``max_queued`` records, and polled at each flush instead of
by a thread of its own. A record the producer refuses (its queue full) is dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from config import Settings
from serving.flush_timer import FlushTimer

__all__ = ["LogOutbox"]

log = logging.getLogger(__name__)


class LogOutbox:
    """Batches encoded records per topic; ``on_outcome`` gets ``queued``, ``failed`` or ``dropped``."""

    def __init__(self, settings: Settings, on_outcome: Callable[[str], None], flush_s: float = 0.05,
                 max_queued: int = 1000, **config: Any) -> None:
        self.on_outcome = on_outcome
        self.flush_s = flush_s
        self.max_queued = max_queued
        producer_config = {
            "enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4",
            "message.timeout.ms": int(settings.serving_kafka_timeout_s * 1000),
            "delivery.report.only.error": True, "on_delivery": self._failed, **config,
        }
        self._producer = Producer(settings.kafka_config(**producer_config))
        # (topic, produce_batch's message); swapped under the lock (close() runs in another thread).
        self._queued: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._timer = FlushTimer(self.flush, flush_s, max_queued)

    def put(self, topic: str, key: str, payload: bytes) -> None:
        """Queue one record; the next flush hands it to the producer (never blocks on Kafka)."""
        with self._lock:
            self._queued.append((topic, {"key": key.encode(), "value": payload}))
            queued = len(self._queued)
        self.on_outcome("queued")
        self._timer.queued(queued)

    def flush(self) -> None:
        """Hand every queued record to the producer (one ``produce_batch`` per topic), serve its reports."""
        with self._lock:
            queued, self._queued = self._queued, []
        batches: dict[str, list[dict[str, Any]]] = {}
        for topic, message in queued:
            batches.setdefault(topic, []).append(message)
        for topic, batch in batches.items():
            try:
                self._producer.produce_batch(topic, batch)
            except (BufferError, KafkaException) as exc:  # the whole batch was refused
                for message in batch:
                    message["_error"] = exc
            refused = [message for message in batch if "_error" in message]
            if refused:
                log.warning("%d records for %s not queued for Kafka: %s", len(refused), topic, refused[0]["_error"])
                for _ in refused:
                    self.on_outcome("dropped")
        self._producer.poll(0)  # failure reports of earlier batches (non-blocking)

    def _failed(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            log.warning("record for %s not delivered: %s", msg.topic(), err.str())
            self.on_outcome("failed")

    async def topic_exists(self, topic: str, timeout_s: float = 2.0) -> bool | None:
        """Whether the broker knows ``topic``; ``None`` when it did not answer (nothing known)."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, topic=topic, timeout=timeout_s)
        except KafkaException:
            return None
        found = metadata.topics.get(topic)
        return found is not None and found.error is None

    def close(self, timeout_s: float = 5.0) -> int:
        """Flush; how many records were still undelivered."""
        self.flush()
        return int(self._producer.flush(timeout_s))
