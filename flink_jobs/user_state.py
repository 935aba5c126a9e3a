"""Stage keyed by user: the Flink adapter around :mod:`flink_jobs.user_steps`.

The steps (session, counts, user-owned MF parameters, impression->reward join, erasure) are
pure and tested alone (``tests/unit/flink_jobs/``); this operator only reads and writes the
user's keyed state, registers the timers the steps ask for, moves metrics and routes what the
steps return (``route``). Item-owned parameters are read from the steps' :class:`ItemReplica`;
the owner's snapshots come back on the broadcast input (through a Kafka topic) and are also
kept in broadcast state, which is checkpointed: a restored subtask warms its replica from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapState, MapStateDescriptor, ValueStateDescriptor

from flink_jobs.messages import BanditFeedback, ClosedSession, ForgetScope, ItemSnapshot, ItemTouch, ModelProgress
from flink_jobs.metrics import BatchedCount, JvmGauge
from flink_jobs.routing import CLOSED_SESSION, TO_BANDITS, TO_ITEMS, TO_MODEL, message, raw_message, to_redis
from flink_jobs.user_steps import (
    EventTimer,
    LateEvent,
    RefreshTimer,
    RewardUnmatched,
    UserRecord,
    UserStageConfig,
    UserSteps,
    session_payload,
)
from schemas import Event, EventType

MODEL_KEY = "mf"  # the one key of the model-metadata stage
#: Broadcast state: item id -> latest ItemSnapshot bytes seen from the owner.
ITEM_PARAMS = MapStateDescriptor("item-params", Types.STRING(), Types.PICKLED_BYTE_ARRAY())

__all__ = ["ITEM_PARAMS", "MODEL_KEY", "UserStageConfig", "UserState", "route", "session_payload", "subtask_index"]


class ImpressionsState:
    """The user's pending impressions (``MapState``) as :class:`flink_jobs.user_steps.Impressions`."""

    def __init__(self, state: MapState) -> None:
        self.state = state

    def get(self, request_id: str) -> Any:
        return self.state.get(request_id)

    def __setitem__(self, request_id: str, value: Any) -> None:
        self.state.put(request_id, value)

    def __delitem__(self, request_id: str) -> None:
        self.state.remove(request_id)

    def items(self) -> Iterable[tuple[str, Any]]:
        return self.state.items()

    def clear(self) -> None:
        self.state.clear()


class UserState(KeyedBroadcastProcessFunction):
    """``keyBy(user_id)``: every event of a user passes here, in order per Kafka partition.

    The broadcast input carries item snapshots from the item owner.
    """

    def __init__(self, config: UserStageConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        # One pickled dict of primitives per user (session bytes, user-factor bytes, counts):
        # one state read and one write per event, and nothing class-shaped in checkpoints.
        self.user = runtime_context.get_state(ValueStateDescriptor("user", Types.PICKLED_BYTE_ARRAY()))
        self.impressions = ImpressionsState(runtime_context.get_map_state(
            MapStateDescriptor("impressions", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        ))
        self.steps = UserSteps(self.config, subtask_index(runtime_context))
        metrics = runtime_context.get_metrics_group()
        # Batched: each inc is a call into the JVM; flushed on the user's timers too, so exact soon after.
        self.processed = {t: BatchedCount(metrics.add_group("type", t.value).counter("events_processed"))
                          for t in EventType}
        self.late = metrics.counter("late_events")
        self.unmatched = metrics.counter("rewards_unmatched")
        self.items_known = JvmGauge(metrics.counter("item_replica_size"))
        self.staleness = JvmGauge(metrics.counter("item_params_staleness_ms"))
        self.staleness_ms = 0
        self.gauges_set_at = 0.0
        self.warm = False

    # -- item snapshots (broadcast input) ---------------------------------------------------

    def process_broadcast_element(self, value: bytes, ctx: KeyedBroadcastProcessFunction.Context) -> None:
        snapshot = ItemSnapshot.from_bytes(value)
        ctx.get_broadcast_state(ITEM_PARAMS).put(snapshot.item_id, bytes(value))
        self.steps.replica.take(snapshot)
        self.staleness_ms = max(0, time.time_ns() // 1_000_000 - snapshot.owner_time_ms)

    def _warm_replica(self, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> None:
        """After a (re)start the replica is empty: fill it from the checkpointed snapshots."""
        for _, value in ctx.get_broadcast_state(ITEM_PARAMS).items():
            self.steps.replica.take(ItemSnapshot.from_bytes(value))
        self.warm = True

    # -- events and timers --------------------------------------------------------------------

    def process_element(self, event: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Iterator[Any]:
        if not self.warm:
            self._warm_replica(ctx)
        self.processed[event.type].add()
        record, outputs = self.steps.on_event(self._load(), event, self.impressions)
        yield from self._emit(outputs, ctx)
        self._save(record)

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Iterator[Any]:
        for count in self.processed.values():
            count.flush()
        if (now := time.monotonic()) - self.gauges_set_at >= 1.0:  # each set is a call into the JVM
            self.gauges_set_at = now
            self.items_known.set(len(self.steps.replica.items))
            self.staleness.set(self.staleness_ms)
        user_id = ctx.get_current_key()
        record = self._load()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if record is None:
                return
            record, outputs = self.steps.on_refresh(user_id, record)
        else:
            record, outputs = self.steps.on_event_timer(user_id, record, timestamp, self.impressions)
            if record is None:
                yield from self._emit(outputs, ctx)
                return
        yield from self._emit(outputs, ctx)
        self._save(record)

    def _load(self) -> UserRecord | None:
        state = self.user.value()
        return None if state is None else UserRecord.from_state(state)

    def _save(self, record: UserRecord | None) -> None:
        if record is None:
            self.user.clear()
        else:
            self.user.update(record.to_state())

    def _emit(self, outputs: list[Any], ctx: Any) -> Iterator[Row]:
        """Route the steps' messages; set the timers they ask for; count what they count."""
        for output in outputs:
            if isinstance(output, EventTimer):
                ctx.timer_service().register_event_time_timer(output.at_ms)
            elif isinstance(output, RefreshTimer):
                timers = ctx.timer_service()
                timers.register_processing_time_timer(timers.current_processing_time() + self.config.score_refresh_ms)
            elif isinstance(output, LateEvent):
                self.late.inc()
            elif isinstance(output, RewardUnmatched):
                self.unmatched.inc()
            else:
                yield route(output, self.config.redis_shards)


def route(output: Any, redis_shards: int) -> Row:
    """A message of the user stage as a row for its consumer (``flink_jobs/routing.py``)."""
    if isinstance(output, ItemTouch):
        return message(TO_ITEMS, output.item_id, output)
    if isinstance(output, BanditFeedback | ForgetScope):
        return message(TO_BANDITS, output.scope_key, output)
    if isinstance(output, ModelProgress):
        return message(TO_MODEL, MODEL_KEY, output)
    if isinstance(output, ClosedSession):
        return raw_message(CLOSED_SESSION, output.summary_json)
    return to_redis(output, redis_shards)


def subtask_index(runtime_context: RuntimeContext) -> int:
    """Index of the running subtask; in thread mode PyFlink 2.2.1 calls a Java method Flink 2 moved."""
    try:
        return int(runtime_context.get_index_of_this_subtask())
    except AttributeError:
        return int(runtime_context._runtime_context.getTaskInfo().getIndexOfThisSubtask())
