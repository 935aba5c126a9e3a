"""``pulse archive run``: the events topic to Parquet files by event hour, exactly once.

A Kafka consumer (confluent-kafka, group ``PULSE_ARCHIVE_GROUP_ID``) gathers records until
``PULSE_ARCHIVE_FLUSH_EVENTS`` wait or ``PULSE_ARCHIVE_FLUSH_S`` have passed, then flushes: every
hour's records of a partition go to one file (``files.write_file``: fsync, atomic rename), records
that do not decode go to the DLQ (original bytes and reason, as the job writes them) and are
counted, and only then are the offsets committed. At the start, files at or after each partition's
committed offset (a flush that crashed before its commit) are deleted and read again, so a kill
at any moment loses and doubles nothing. The archiver reads every partition of the topic (assigned
at the start, not a group member); a folder belongs to one topic and group (``_archive.json``),
and one archiver runs per folder.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from archive.files import claim, discard_uncommitted, write_file
from archive.layout import ArchivedEvent, to_table
from archive.offsets import commit, committed
from config import Settings
from schemas import DeadLetterCodec, DecodeError, EventCodec, load_registry

log = logging.getLogger(__name__)


class ArchiveError(RuntimeError):
    """The archiver cannot go on (one line, for the command's error)."""


@dataclass
class ArchiveReport:
    """What the archiver has done since it started."""

    archived: int = 0
    dead_letters: int = 0
    files: int = 0
    flushes: int = 0

    def __str__(self) -> str:
        return (f"archived {self.archived} events in {self.files} files ({self.flushes} flushes), "
                f"{self.dead_letters} dead letters")


class Archiver:
    """Archives ``settings.topic_events`` under ``root``; :meth:`run` until stopped or at the end."""

    def __init__(self, settings: Settings, root: Path) -> None:
        self.settings, self.root, self.topic = settings, root, settings.topic_events
        self.report = ArchiveReport()
        registry = load_registry(settings.schema_registry_url)
        self._codec, self._dead_letters = EventCodec(registry), DeadLetterCodec(registry)
        self._consumer = Consumer(settings.kafka_config(**{
            "group.id": settings.archive_group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed", "enable.partition.eof": True,
        }))
        self._producer = Producer(settings.kafka_config(**{"enable.idempotence": True, "acks": "all"}))
        self._pending: dict[int, list[ArchivedEvent]] = defaultdict(list)
        self._commit: dict[int, int] = {}  # partition -> offset after its last record read (flushed or not)
        self._position: dict[int, int] = {}  # partition -> where reading got to (records and end-of-partition)
        self._waiting, self._first_waiting_at = 0, 0.0
        self._failures: list[str] = []

    def run(self, *, until_end: bool = False, should_stop: Callable[[], bool] = lambda: False) -> ArchiveReport:
        """Archive until ``should_stop()`` holds or, with ``until_end``, up to the end offsets at the start."""
        try:
            claim(self.root, self.topic, self.settings.archive_group_id)
        except ValueError as exc:
            raise ArchiveError(str(exc)) from None
        try:
            ends = self._end_offsets() if until_end else {}
            self._consumer.assign(self._start_positions())
            batch = min(5000, self.settings.archive_flush_events)
            while not should_stop():
                for message in self._consumer.consume(num_messages=batch, timeout=0.5):
                    self._take(message)
                if self._failures:
                    raise ArchiveError("; ".join(self._failures))
                due = time.monotonic() - self._first_waiting_at >= self.settings.archive_flush_s
                if self._waiting >= self.settings.archive_flush_events or (self._waiting and due):
                    self.flush()
                if until_end and all(self._position.get(p, -1) >= end for p, end in ends.items()):
                    break
            self.flush()
        finally:
            self._consumer.close()
        return self.report

    def _take(self, message: Message) -> None:
        partition, offset, error = message.partition(), message.offset(), message.error()
        if partition is None or offset is None:
            return
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                self._position[partition] = max(self._position.get(partition, 0), offset)
            elif error.fatal() or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise ArchiveError(f"reading {self.topic}[{partition}] failed: {error.str()}")
            else:
                log.warning("reading %s[%s]: %s", self.topic, partition, error.str())
            return
        raw = message.value() or b""
        try:
            self._pending[partition].append(ArchivedEvent(partition, offset, raw, self._codec.decode(raw)))
        except DecodeError as exc:
            self._dead_letter(raw, exc, partition, offset)
        if not self._waiting:
            self._first_waiting_at = time.monotonic()
        self._waiting += 1
        self._commit[partition] = self._position[partition] = offset + 1

    def _dead_letter(self, raw: bytes, exc: DecodeError, partition: int, offset: int) -> None:
        value = self._dead_letters.encode(raw, exc.reason.value, f"archive: {exc.detail}", self.topic, partition,
                                          offset, int(time.time() * 1000))
        self._producer.produce(self.settings.topic_dlq, value=value, on_delivery=self._on_delivery)
        self._producer.poll(0)
        self.report.dead_letters += 1

    def _on_delivery(self, err: KafkaError | None, _message: Message) -> None:
        if err is not None:
            self._failures.append(f"a dead letter was not delivered to {self.settings.topic_dlq}: {err.str()}")

    def flush(self) -> None:
        """Write every waiting event to its hour's file, deliver the dead letters, then commit the offsets."""
        if not self._commit:
            return
        written = 0
        for partition, events in self._pending.items():
            by_hour: dict[str, list[ArchivedEvent]] = defaultdict(list)
            for event in events:
                by_hour[event.hour].append(event)
            for hour, rows in by_hour.items():
                write_file(self.root, hour, partition, rows[0].offset, to_table(rows))
                written += 1
            self.report.archived += len(events)
        if self._producer.flush(30):
            self._failures.append(f"dead letters still undelivered to {self.settings.topic_dlq} after 30 s")
        if self._failures:  # the files are rewritten after a restart: nothing is committed without its DLQ records
            raise ArchiveError("; ".join(self._failures))
        commit(self._consumer, self.topic, self._commit)
        self.report.files += written
        self.report.flushes += 1
        log.info("%s; committed %s", self.report, ", ".join(f"[{p}] {o}" for p, o in sorted(self._commit.items())))
        self._pending.clear()
        self._commit.clear()
        self._waiting = 0

    def _start_positions(self) -> list[TopicPartition]:
        """Every partition at its committed offset, after deleting what a flush wrote there but never committed.

        Assigned, not subscribed: no group membership, so a restart after a kill reads at once
        instead of waiting for the killed member's session to expire.
        """
        meta = self._consumer.list_topics(timeout=30).topics.get(self.topic)  # no topic named: no auto-creation
        if meta is None or meta.error is not None:
            raise ArchiveError(f"topic {self.topic!r} does not exist")
        positions = []
        for partition, offset in committed(self._consumer, self.topic, sorted(meta.partitions)).items():
            kept = max(offset, 0)  # none yet: every file of the partition is from a first flush that crashed
            gone = discard_uncommitted(self.root, partition, kept)
            if gone:
                log.info("partition %d: deleted %d files written after its committed offset %d (read again)",
                         partition, len(gone), kept)
            positions.append(TopicPartition(self.topic, partition, offset if offset >= 0 else OFFSET_BEGINNING))
        return positions

    def _end_offsets(self) -> dict[int, int]:
        """Partition -> end offset now, for a run that stops there."""
        meta = self._consumer.list_topics(timeout=30).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise ArchiveError(f"topic {self.topic!r} does not exist")
        return {p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=30)[1]
                for p in meta.partitions}
