"""Stage: the Redis sink. Writes are keyed by shard, parked in keyed state, flushed in one pipeline.

Parking pending writes in Flink state (instead of a Python list) is what makes the sink
exactly-once in effect: a checkpoint holds every write it has not flushed yet, a restored job
flushes them again, and the event-time guard of :class:`RedisWriter` makes the repeat harmless.
Writes to the same key coalesce (only the newest is sent).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from flink_jobs.messages import DeleteKeys, EraseUser, RedisWrite, RedisWrites
from flink_jobs.redis_sink import RedisWriter
from flink_jobs.shared_state import END_OF_TIME

_FLUSH_AT = 2000  # pending keys that trigger a flush before the timer


Message = RedisWrite | RedisWrites | EraseUser | DeleteKeys


def shard_of(message: Message, shards: int) -> str:
    """The sink shard of a message: all keys of one user land on one shard, in order."""
    route = message.user_id if isinstance(message, EraseUser) else message.route
    return f"s{zlib.crc32(route.encode()) % shards}"


class RedisOutput(KeyedProcessFunction):
    """``keyBy(shard)``: park writes and erasures; flush every ``flush_ms`` and when input ends."""

    def __init__(self, writer: RedisWriter, flush_ms: int) -> None:
        self.writer = writer
        self.flush_ms = flush_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.pending = runtime_context.get_map_state(
            MapStateDescriptor("pending", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self.erasures = runtime_context.get_map_state(MapStateDescriptor("erasures", Types.STRING(), Types.LONG()))
        #: route -> (event time, keys) of DeleteKeys (an erased user's bandit).
        self.deletions = runtime_context.get_map_state(
            MapStateDescriptor("deletions", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self.size = runtime_context.get_state(ValueStateDescriptor("size", Types.INT()))
        metrics = runtime_context.get_metrics_group()
        self.written = metrics.counter("redis_keys_written")
        self.stale = metrics.counter("redis_writes_stale")
        self.erased = metrics.counter("users_erased")
        self.flush_seconds = 0.0
        metrics.gauge("redis_last_flush_ms", lambda: int(self.flush_seconds * 1000))
        self.writer.open()

    def close(self) -> None:
        self.writer.close()

    def process_element(self, message: Message, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        size = self.size.value() or 0
        if size == 0:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(timers.current_processing_time() + self.flush_ms)
            timers.register_event_time_timer(END_OF_TIME)
        if isinstance(message, EraseUser):
            self.erasures.put(message.user_id, message.event_time_ms)
            size += 1
        elif isinstance(message, DeleteKeys):
            self.deletions.put(message.route, (message.event_time_ms, message.keys))
            size += 1
        else:
            for write in message.writes if isinstance(message, RedisWrites) else (message,):
                current = self.pending.get(write.key)
                if current is None or current[0] <= write.event_time_ms:
                    self.pending.put(write.key, (write.event_time_ms, write.payload, write.route))
                size += 1
        self.size.update(size)
        if size >= _FLUSH_AT:
            self._flush()
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        if self.size.value():
            self._flush()
        return iter(())

    def _flush(self) -> None:
        started = time.perf_counter()
        erased = dict(self.erasures.items())
        deletions = dict(self.deletions.items())
        cutoff = {**erased, **{route: event_time for route, (event_time, _) in deletions.items()}}
        batch = [
            (key, event_time, payload)
            for key, (event_time, payload, route) in self.pending.items()
            # A write made before the user's erasure must not bring the user back.
            if not (route in cutoff and event_time <= cutoff[route])
        ]
        if batch:
            result = self.writer.write_batch(batch)
            self.written.inc(result.written)
            self.stale.inc(result.skipped_stale)
        for user_id in erased:
            self.writer.delete_user(user_id)
            self.erased.inc()
        for _, keys in deletions.values():
            self.writer.delete_keys(keys)
        self.pending.clear()
        self.erasures.clear()
        self.deletions.clear()
        self.size.clear()
        self.flush_seconds = time.perf_counter() - started

