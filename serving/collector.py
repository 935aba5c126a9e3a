"""Kafka side of the shim: validate events against the Avro contract and produce them (key = user id).

One confluent ``Producer`` per app. :meth:`Collector.send` awaits the delivery report (the
collector's 202 and erasure need the ack); :meth:`Collector.send_nowait` only enqueues
(impressions: the decision response never waits for the broker) and reports the outcome to a
callback. A daemon thread polls the producer continuously while a request waits on a report, so
the report is served as soon as it arrives. Otherwise (impressions only) the reports are served
by the event loop at each impressions flush, and by the thread every ``idle_poll_s``: a report
served on the poll thread takes the GIL from the event loop once per record, which at 2,000
decisions/s cost ~12 us of server CPU per decision (bench/serving.py).

Impressions are handed to the producer in batches, every ``impression_flush_s`` (or at 1,000
queued): at 2,000 decisions/s one produce call and one delivery request per impression cost
librdkafka's threads more CPU than the rest of a decision (bench/serving.py); batched, the
broker sees a few requests a second (every 50 ms: at 10 ms librdkafka's threads still took ~20 us
per decision). Nothing is lost by the wait: every ``send``/``send_many``
hands the queued impressions over first (so a user's click is never produced before the
impression it answers) and :meth:`Collector.close` does before flushing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from config import Settings
from schemas import DecodeError, DecodeReason, Event, EventCodec, load_registry
from serving.flush_timer import FlushTimer
from serving.impressions import DirectEventWriter

__all__ = ["Collector", "CollectorUnavailableError", "Delivered"]

log = logging.getLogger(__name__)


class CollectorUnavailableError(RuntimeError):
    """Kafka did not take or acknowledge the event."""

    reason = "kafka_unavailable"


@dataclass(frozen=True, slots=True)
class Delivered:
    """Where the broker stored an event."""

    topic: str
    partition: int
    offset: int


def _settle(future: asyncio.Future[Delivered], err: KafkaError | None, msg: Message) -> None:
    if future.done():
        return
    if err is not None:
        future.set_exception(CollectorUnavailableError(f"broker did not acknowledge: {err.str()}"))
    else:
        future.set_result(Delivered(str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)))


def _settle_threadsafe(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Delivered], err: KafkaError | None, msg: Message
) -> None:
    loop.call_soon_threadsafe(_settle, future, err, msg)


def _impression_delivered(event_id: str, on_outcome: Callable[[str], None], err: KafkaError | None,
                          _msg: Message) -> None:
    if err is not None:
        log.warning("impression %s not delivered: %s", event_id, err.str())
    on_outcome("failed" if err is not None else "delivered")


class Collector:
    """Validates and produces events to the events topic."""

    #: Queued impressions past this many are handed to the producer at once.
    max_queued_impressions = 1000
    #: Impressions checked and written per event-loop step by the timer's flush: ~10-15 us each, so a
    #: step holds the requests that arrive meanwhile for ~0.2 ms, not the whole batch's time.
    write_step = 8
    #: How often the poll thread serves delivery reports while no request waits on one.
    idle_poll_s = 0.5

    def __init__(self, settings: Settings, impression_flush_s: float = 0.05, **config: Any) -> None:
        self.topic = settings.topic_events
        self.impression_flush_s = impression_flush_s
        # Impressions not yet produced (the event, its outcome callback); swapped under the lock, as
        # close() runs in another thread.
        self._impressions: list[tuple[Event | Callable[[], Event], Callable[[str], None]]] = []
        # Checked and written, not yet produced (produce_batch's message, outcome callback).
        self._written: list[tuple[dict[str, Any], Callable[[str], None]]] = []
        self._impressions_lock = threading.Lock()
        self._impression_timer = FlushTimer(self._flush_step, impression_flush_s, self.max_queued_impressions)
        self.timeout_s = settings.serving_kafka_timeout_s
        self.codec = EventCodec(load_registry(settings.schema_registry_url))
        self.writer = DirectEventWriter(self.codec)
        producer_config = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "compression.type": "lz4",
            "message.timeout.ms": int(settings.serving_kafka_timeout_s * 1000),
            **config,
        }
        self._producer = Producer(settings.kafka_config(**producer_config))
        self._stop = threading.Event()
        self._awaited = 0  # requests waiting on a delivery report (changed on the event loop only)
        self._wake = threading.Event()  # set when one starts waiting
        self._thread = threading.Thread(target=self._poll, name="pulse-serving-kafka-poll", daemon=True)
        self._thread.start()

    def encode(self, event: Event) -> bytes:
        """Encode with the codec and decode back, so the event passes the job's own checks; else DecodeError."""
        try:
            payload = self.codec.encode(event)
        except (ValueError, TypeError, OverflowError) as exc:
            raise DecodeError(DecodeReason.INVALID_BODY, f"does not fit event.avsc: {exc}") from None
        self.codec.decode(payload)
        return payload

    async def send(self, event: Event) -> Delivered:
        """Validate, produce, and wait for the broker's acknowledgement."""
        payload = self.encode(event)
        self.flush_impressions()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, future, err, msg)

        self._awaiting(1)
        try:
            self._produce(event.user_id, payload, on_delivery)
            return await asyncio.wait_for(future, self.timeout_s + 1.0)
        except TimeoutError:
            raise CollectorUnavailableError(f"no delivery report within {self.timeout_s + 1.0:.0f}s") from None
        finally:
            self._awaiting(-1)

    async def send_many(self, items: Sequence[tuple[str, bytes]]) -> list[Delivered | CollectorUnavailableError]:
        """Produce every encoded ``(key, payload)``, then wait for each one's delivery report.

        One result per item, in order: where the broker stored it, or why it did not (the caller
        reports those as failed, to be resent). Nothing is answered before every report is in or
        the delivery timeout passed, so an answer never claims an event the broker may still drop.
        """
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Delivered]] = []
        self.flush_impressions()
        self._awaiting(1)
        try:
            for key, payload in items:
                future: asyncio.Future[Delivered] = loop.create_future()
                futures.append(future)
                try:
                    self._produce(key, payload, functools.partial(_settle_threadsafe, loop, future))
                except CollectorUnavailableError as exc:
                    future.set_exception(exc)
            if futures:
                await asyncio.wait(futures, timeout=self.timeout_s + 1.0)
        finally:
            self._awaiting(-1)
        results: list[Delivered | CollectorUnavailableError] = []
        for future in futures:
            if not future.done():
                future.cancel()  # a report arriving later finds it done
                results.append(CollectorUnavailableError(f"no delivery report within {self.timeout_s + 1.0:.0f}s"))
            elif isinstance(error := future.exception(), CollectorUnavailableError):
                results.append(error)
            else:
                results.append(future.result())
        return results

    def send_nowait(self, event: Event | Callable[[], Event], on_outcome: Callable[[str], None]) -> None:
        """Queue an event the server built (an impression), or what builds it (a decision's ``impression``).

        It is built, checked and written at the flush: at 2,000 decisions/s each decision is an
        event-loop wake-up of its own, and building the event, the job's checks and the Avro bytes run
        cold per request cost ~25 us of server CPU per decision more than run in the flush's loop over
        the batch (bench/serving.py, ADR 0004). What the request brings
        (user, arms, context) is held to the decision route's request model, which is stricter
        than the checks, so a decision whose impression fails them is a 400 before it gets here.
        ``on_outcome`` gets ``delivered`` or ``failed`` (from the poll thread), ``dropped`` when the
        producer's queue was full, or ``invalid`` when the impression failed the checks (logged).
        """
        with self._impressions_lock:
            self._impressions.append((event, on_outcome))
            queued = len(self._impressions)
        self._impression_timer.queued(queued)

    def flush_impressions(self) -> None:
        """Check, write and hand every queued impression to the producer now (one ``produce_batch``)."""
        self._check_and_write(None)
        with self._impressions_lock:
            written, self._written = self._written, []
        if not written:
            return
        batch = [message for message, _ in written]
        try:
            self._producer.produce_batch(self.topic, batch)
        except (BufferError, KafkaException) as exc:  # the whole batch was refused
            for message in batch:
                message["_error"] = exc
        for message, on_outcome in written:
            if "_error" in message:
                log.warning("impression not queued for Kafka: %s", message["_error"])
                on_outcome("dropped")
        self._producer.poll(0)  # earlier batches' delivery reports, on this thread (non-blocking)

    def _flush_step(self) -> None:
        """The timer's flush: ``write_step`` impressions checked and written per event-loop step, then produced.

        In one step, the ~100 impressions of 50 ms at 2,000 decisions/s held the requests arriving
        meanwhile for ~1.5 ms: the decisions' paced p99 went from ~0.7 to ~1.9 ms (bench/serving.py).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush_impressions()
            return
        if self._check_and_write(self.write_step):
            loop.call_soon(self._flush_step)
        else:
            self.flush_impressions()

    def _check_and_write(self, limit: int | None) -> int:
        """Check and write up to ``limit`` queued impressions (``None``: all); returns how many are still queued.

        The job's checks and the Avro bytes; one that fails the checks is logged and counted ``invalid``.
        """
        with self._impressions_lock:
            if limit is None or len(self._impressions) <= limit:
                taken, self._impressions = self._impressions, []
            else:
                taken, self._impressions = self._impressions[:limit], self._impressions[limit:]
            left = len(self._impressions)
        written: list[tuple[dict[str, Any], Callable[[str], None]]] = []
        now_ms = time.time_ns() // 1_000_000
        for queued, on_outcome in taken:
            event = queued if isinstance(queued, Event) else queued()
            try:
                self.codec.validate(event, now_ms)
                payload = self.writer.encode(event)
            except (DecodeError, ValueError, TypeError, OverflowError) as exc:  # the request model lets none by
                log.error("impression %s not logged: it fails the job's checks: %s", event.event_id, exc)
                on_outcome("invalid")
                continue
            written.append(({"key": event.user_id.encode(), "value": payload,
                             "callback": functools.partial(_impression_delivered, event.event_id, on_outcome)},
                            on_outcome))
        with self._impressions_lock:
            self._written.extend(written)
        return left

    async def ping(self, timeout_s: float = 2.0) -> None:
        """Broker metadata within ``timeout_s``, and the events topic exists."""
        try:
            metadata = await asyncio.to_thread(self._producer.list_topics, timeout=timeout_s)
        except KafkaException as exc:
            raise CollectorUnavailableError(f"no broker metadata: {exc}") from None
        if self.topic not in metadata.topics:
            raise CollectorUnavailableError(f"topic {self.topic!r} does not exist")

    def close(self, timeout_s: float = 5.0) -> int:
        """Stop polling and flush; returns how many messages were still undelivered."""
        self.flush_impressions()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        return int(self._producer.flush(timeout_s))

    def _produce(self, key: str, payload: bytes, on_delivery: Callable[[KafkaError | None, Message], None]) -> None:
        try:
            self._producer.produce(self.topic, value=payload, key=key.encode(), on_delivery=on_delivery)
        except BufferError:
            raise CollectorUnavailableError("the local producer queue is full") from None
        except KafkaException as exc:
            raise CollectorUnavailableError(f"produce failed: {exc}") from None

    def _awaiting(self, change: int) -> None:
        """One request more (``1``) or less (``-1``) waiting on a delivery report."""
        self._awaited += change
        if change > 0:
            self._wake.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            if self._awaited:
                self._producer.poll(0.05)  # returns as soon as a report is served
                continue
            self._wake.wait(self.idle_poll_s)
            self._wake.clear()
            self._producer.poll(0)
