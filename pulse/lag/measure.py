"""The pure part of ``pulse lag``: lag arithmetic, freshness statistics, thresholds, JSON shapes.

No I/O: every value comes in as an argument (offsets, event times, ``now``), so all of it is
tested without services. Definitions: :mod:`pulse.lag`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "WINDOW",
    "DeadLetters",
    "Freshness",
    "LagReport",
    "PartitionLag",
    "ReadWindow",
    "Thresholds",
    "breaches",
    "freshness",
    "lag_messages",
    "lag_seconds",
    "offsets_to_read",
    "resume_offset",
]


def resume_offset(committed: int | None, low: int) -> int:
    """Where the job resumes: its committed offset, or the log start when it has none (or it was deleted)."""
    return low if committed is None or committed < low else committed


def lag_messages(committed: int | None, low: int, high: int) -> int:
    """Records in ``[resume offset, high)``: what the job has not committed yet.

    >>> lag_messages(committed=100, low=0, high=100), lag_messages(committed=5, low=20, high=30)
    (0, 10)
    >>> lag_messages(committed=None, low=0, high=0)
    0
    """
    return max(high - resume_offset(committed, low), 0)


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
                "committed_offset": sum(resume_offset(p.committed, p.low) for p in self.partitions),
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
