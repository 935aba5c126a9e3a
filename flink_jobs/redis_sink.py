"""Stage: the Redis sink for the shared stages' keys. Writes are keyed by shard, batched, flushed in one pipeline.

The user stage writes its users' keys itself (``flink_jobs/redis_outbox.py``); item parameters,
bandit arms, popularity and model metadata come here. Flushing everything before each checkpoint
barrier is what makes the sink exactly-once in effect: no checkpoint holds a write Redis has
not had, a restored job's replay repeats what came after it, and the event-time guard of
:class:`RedisWriter` makes the repeat harmless. The writer itself: ``redis_writer.py``.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor

from flink_jobs.batching import CurrentKey, read_batch
from flink_jobs.redis_outbox import RedisMessage, RedisOutbox
from flink_jobs.redis_writer import RedisWriter


class RedisSink(KeyedProcessFunction):
    """``keyBy(shard)``, one call per micro-batch: messages wait in a :class:`RedisOutbox`, flushed every ``flush_ms``.

    Everything waiting is flushed in the batch the batcher sends before each checkpoint barrier.
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
        self.outbox = RedisOutbox(self.writer, self.flush_ms, runtime_context.get_metrics_group())
        self.shards_seen: set[str] = set()
        self.writer.open()

    def close(self) -> None:
        self.writer.close()

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        self.keys.current = None  # Flink set the batch's key
        flags, records = read_batch(batch)
        for shard, value in records:
            if shard not in self.shards_seen:
                self._unpark(shard)
            message: RedisMessage = pickle.loads(value)
            self.outbox.add(message)
        if flags or self.outbox.due():
            self.outbox.flush()
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        self.keys.current = None
        self._unpark(ctx.get_current_key())
        self.outbox.flush()
        return iter(())

    def _unpark(self, shard: str) -> None:
        """Messages parked in keyed state by a job before batching join the pending ones."""
        self.shards_seen.add(shard)
        self.keys.use(shard)
        parked = list(self.parked.items())
        if parked:
            self.parked.clear()
            for key, message in parked:
                self.outbox.setdefault(key, message)
