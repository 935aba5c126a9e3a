"""Stage: the Redis sink. Writes are keyed by shard, parked in keyed state, flushed in one pipeline.

Parking pending writes in Flink state (instead of a Python list) is what makes the sink
exactly-once in effect: a checkpoint holds every write it has not flushed yet, a restored job
flushes them again, and the event-time guard of :class:`RedisWriter` makes the repeat harmless.
Writes to the same key coalesce (only the newest is sent). The writer itself: ``redis_writer.py``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from flink_jobs.messages import DeleteKeys, EraseUser, RedisWrite, RedisWrites
from flink_jobs.metrics import JvmGauge
from flink_jobs.redis_writer import BatchItem, RedisWriter
from flink_jobs.shared_state import END_OF_TIME

_FLUSH_AT = 1000  # parked messages that trigger a flush before the timer


Message = RedisWrite | RedisWrites | EraseUser | DeleteKeys


class RedisSink(KeyedProcessFunction):
    """``keyBy(shard)``: park messages; flush them every ``flush_ms`` and when the input ends.

    A message is parked under its first key (one state write per message, not per key): a
    newer message for the same keys replaces it, since each key has one writer upstream
    (the user's or the owner's subtask), whose messages arrive in order.
    """

    def __init__(self, writer: RedisWriter, flush_ms: int) -> None:
        self.writer = writer
        self.flush_ms = flush_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending-messages", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        #: Messages parked per shard since its last flush. In memory: after a restore it starts at 0,
        #: which only means a flush timer is registered once more (the restored ones fire too).
        self.parked: dict[str, int] = {}
        metrics = runtime_context.get_metrics_group()
        self.written = metrics.counter("redis_keys_written")
        self.stale = metrics.counter("redis_writes_stale")
        self.erased = metrics.counter("users_erased")
        self.last_flush_ms = JvmGauge(metrics.counter("redis_last_flush_ms"))
        self.writer.open()

    def close(self) -> None:
        self.writer.close()

    def process_element(self, message: Message, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        shard = ctx.get_current_key()
        parked = self.parked.get(shard, 0)
        if parked == 0:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time() + self.flush_ms)
            timers.register_event_time_timer(END_OF_TIME)
        self.pending.put(_parking_key(message), message)
        self.parked[shard] = parked + 1
        if parked + 1 >= _FLUSH_AT:
            self._flush(shard)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        self._flush(ctx.get_current_key())
        return iter(())

    def _flush(self, shard: str) -> None:
        started = time.perf_counter()
        messages = [message for _, message in self.pending.items()]
        self.parked[shard] = 0
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
        self.pending.clear()
        self.last_flush_ms.set(int((time.perf_counter() - started) * 1000))


def _parking_key(message: Message) -> str:
    """Where a message waits for the flush; a later message with the same key supersedes it."""
    if isinstance(message, EraseUser):
        return f"erase\0{message.user_id}"
    if isinstance(message, DeleteKeys):
        return f"delete\0{message.route}"
    first = message.writes[0] if isinstance(message, RedisWrites) else message
    return first.key
