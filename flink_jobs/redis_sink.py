"""Stage: the Redis sink. Writes are keyed by shard, batched, flushed in one pipeline.

Flushing everything before each checkpoint barrier is what makes the sink exactly-once in
effect: no checkpoint holds a write Redis has not had, a restored job's replay repeats what came
after it, and the event-time guard of :class:`RedisWriter` makes the repeat harmless. Writes to the
same key coalesce (only the newest is sent). The writer itself: ``redis_writer.py``.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from flink_jobs.batching import CurrentKey, read_batch
from flink_jobs.messages import DeleteKeys, EraseUser, RedisWrite, RedisWrites
from flink_jobs.metrics import JvmGauge
from flink_jobs.redis_writer import BatchItem, RedisWriter

_FLUSH_AT = 1000  # parked messages that trigger a flush before the timer


Message = RedisWrite | RedisWrites | EraseUser | DeleteKeys


class RedisSink(KeyedProcessFunction):
    """``keyBy(shard)``, one call per micro-batch: messages wait in memory, flushed every ``flush_ms``.

    A message waits under its first key: a newer message for the same keys replaces it, since
    each key has one writer upstream (the user's or the owner's subtask), whose messages arrive
    in order. Everything waiting is flushed in the batch the batcher sends before each checkpoint
    barrier, so a checkpoint never holds a write that Redis has not had; a restored job's replay
    repeats writes, and the event-time guard of :class:`RedisWriter` makes the repeat harmless.
    Messages a job before batching parked in keyed state are flushed the first time their shard
    is seen again (or by the timers that job left).
    """

    def __init__(self, writer: RedisWriter, flush_ms: int) -> None:
        self.writer = writer
        self.flush_ms = flush_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.parked = runtime_context.get_map_state(
            MapStateDescriptor("pending-messages", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self.keys = CurrentKey(runtime_context)
        self.pending: dict[str, Message] = {}
        self.flush_at: float | None = None
        self.shards_seen: set[str] = set()
        metrics = runtime_context.get_metrics_group()
        self.written = metrics.counter("redis_keys_written")
        self.stale = metrics.counter("redis_writes_stale")
        self.erased = metrics.counter("users_erased")
        self.last_flush_ms = JvmGauge(metrics.counter("redis_last_flush_ms"))
        self.writer.open()

    def close(self) -> None:
        self.writer.close()

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        self.keys.current = None  # Flink set the batch's key
        flags, records = read_batch(batch)
        for shard, value in records:
            if shard not in self.shards_seen:
                self._unpark(shard)
            message: Message = pickle.loads(value)
            self.pending[_parking_key(message)] = message
        now = time.monotonic()
        if self.pending and self.flush_at is None:
            self.flush_at = now + self.flush_ms / 1000
        if flags or len(self.pending) >= _FLUSH_AT or (self.flush_at is not None and now >= self.flush_at):
            self._flush()
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        self.keys.current = None
        self._unpark(ctx.get_current_key())
        self._flush()
        return iter(())

    def _unpark(self, shard: str) -> None:
        """Messages parked in keyed state by a job before batching join the pending ones."""
        self.shards_seen.add(shard)
        self.keys.use(shard)
        parked = list(self.parked.items())
        if parked:
            self.parked.clear()
            for key, message in parked:
                self.pending.setdefault(key, message)

    def _flush(self) -> None:
        started = time.perf_counter()
        messages = list(self.pending.values())
        self.pending.clear()
        self.flush_at = None
        if not messages:
            return
        erased = {m.user_id: m.event_time_ms for m in messages if isinstance(m, EraseUser)}
        deletions = [m for m in messages if isinstance(m, DeleteKeys)]
        cutoff = {**erased, **{m.route: m.event_time_ms for m in deletions}}
        # Deletions go first: a write in the batch is newer than the erasure (older ones are dropped below).
        for user_id in erased:
            self.writer.delete_user(user_id)
            self.erased.inc()
        for deletion in deletions:
            self.writer.delete_keys(deletion.keys)
        batch = [
            BatchItem(write.key, write.event_time_ms, write.payload)
            for message in messages if isinstance(message, RedisWrite | RedisWrites)
            for write in (message.writes if isinstance(message, RedisWrites) else (message,))
            # A write made before the user's erasure must not bring the user back.
            if not (write.route in cutoff and write.event_time_ms <= cutoff[write.route])
        ]
        if batch:
            result = self.writer.write_batch(batch)
            self.written.inc(result.written)
            self.stale.inc(result.skipped_stale)
        self.last_flush_ms.set(int((time.perf_counter() - started) * 1000))


def _parking_key(message: Message) -> str:
    """Where a message waits for the flush; a later message with the same key supersedes it."""
    if isinstance(message, EraseUser):
        return f"erase\0{message.user_id}"
    if isinstance(message, DeleteKeys):
        return f"delete\0{message.route}"
    first = message.writes[0] if isinstance(message, RedisWrites) else message
    return first.key
