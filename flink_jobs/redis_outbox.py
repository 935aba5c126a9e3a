"""Redis writes waiting for their flush, in whichever stage made them.

A stage that owns keys (the user stage for its users' keys; the Redis sink stage for the shared
stages' keys) keeps its Redis-bound messages here and flushes them in one pipeline: every
``flush_ms``, when many are waiting, and always before a checkpoint barrier, so a checkpoint never
holds a write Redis has not had. A restored job's replay repeats writes, and the event-time guard
of :class:`flink_jobs.redis_writer.RedisWriter` makes the repeat harmless.

Writes to the same key coalesce (only the newest is sent): each key has one writer upstream
(the user's or the owner's subtask), whose messages come in order.
"""

from __future__ import annotations

import time
from typing import Any

from flink_jobs.messages import DeleteKeys, EraseUser, RedisWrite, RedisWrites, SetMember
from flink_jobs.metrics import JvmGauge
from flink_jobs.redis_writer import BatchItem, RedisWriter

#: Messages waiting that trigger a flush before ``flush_ms`` has passed.
FLUSH_AT = 1000

RedisMessage = RedisWrite | RedisWrites | EraseUser | DeleteKeys


class RedisOutbox:
    """Pending Redis messages of one stage's subtask, by key; :meth:`flush` sends them in one pipeline."""

    def __init__(self, writer: RedisWriter, flush_ms: int, metrics: Any) -> None:
        self.writer = writer
        self.flush_ms = flush_ms
        self.pending: dict[str, RedisMessage] = {}
        self.flush_at: float | None = None
        self.erasing = False  # an erasure or deletion waits: flush it at the end of this batch
        self.written = metrics.counter("redis_keys_written")
        self.stale = metrics.counter("redis_writes_stale")
        self.erased = metrics.counter("users_erased")
        self.last_flush_ms = JvmGauge(metrics.counter("redis_last_flush_ms"))

    def add(self, message: RedisMessage, key: str | None = None) -> None:
        """Wait for the next flush; a later message for the same key replaces this one.

        Unless it is an older write (lower event time): coalescing keeps what the writer's
        event-time guard would keep (catalogue entries, unlike a user's writes, may arrive out of order).
        """
        key = key or parking_key(message)
        if isinstance(message, EraseUser | DeleteKeys):
            self._drop_writes_of(message.user_id if isinstance(message, EraseUser) else message.route)
        waiting = self.pending.get(key)
        if (isinstance(waiting, RedisWrite) and isinstance(message, RedisWrite)
                and waiting.event_time_ms > message.event_time_ms):
            return
        self.pending[key] = message
        self.erasing = self.erasing or isinstance(message, EraseUser | DeleteKeys)
        if self.flush_at is None:
            self.flush_at = time.monotonic() + self.flush_ms / 1000

    def _drop_writes_of(self, route: str) -> None:
        """Drop the waiting writes of ``route``: made before its erasure, they must not bring the user back.

        Whatever their event time: a value computed just before the erase event can carry a later one.
        """
        made_before = [key for key, waiting in self.pending.items()
                       if isinstance(waiting, RedisWrite | RedisWrites) and waiting.route == route]
        for key in made_before:
            del self.pending[key]

    def setdefault(self, key: str, message: RedisMessage) -> None:
        """Wait under ``key`` unless a message waits there already (parked messages of an older job)."""
        if key not in self.pending:
            self.add(message, key)

    def due(self) -> bool:
        """Time to flush: an erasure waits (promised within 1 s), the oldest waited ``flush_ms``, or many wait."""
        return self.erasing or len(self.pending) >= FLUSH_AT or (
            self.flush_at is not None and time.monotonic() >= self.flush_at)

    def flush(self) -> None:
        """Send everything waiting: erasures and deletions first, then the writes made after them.

        Stream order, not event time, decides what an erasure removes: writes made before it were
        dropped when it arrived (:meth:`add`); a write waiting now was made after it (the user's later
        events, whatever their timestamps), so it is the user's new data.
        """
        started = time.perf_counter()
        messages = list(self.pending.values())
        self.pending.clear()
        self.flush_at = None
        self.erasing = False
        if not messages:
            return
        for message in messages:
            if isinstance(message, EraseUser):
                self.writer.delete_user(message.user_id)
                self.erased.inc()
            elif isinstance(message, DeleteKeys):
                self.writer.delete_keys(message.keys)
        batch = [
            BatchItem(write.key, write.event_time_ms, write.payload)
            for message in messages if isinstance(message, RedisWrite | RedisWrites)
            for write in (message.writes if isinstance(message, RedisWrites) else (message,))
        ]
        if batch:
            result = self.writer.write_batch(batch)
            self.written.inc(result.written)
            self.stale.inc(result.skipped_stale)
        self.last_flush_ms.set(int((time.perf_counter() - started) * 1000))


def parking_key(message: RedisMessage) -> str:
    """Where a message waits for the flush; a later message with the same key supersedes it."""
    if isinstance(message, EraseUser):
        return f"erase\0{message.user_id}"
    if isinstance(message, DeleteKeys):
        return f"delete\0{message.route}"
    first = message.writes[0] if isinstance(message, RedisWrites) else message
    if isinstance(first.payload, SetMember):  # members of one set add up: none replaces another
        return f"{first.key}\0{first.payload.member}"
    return first.key
