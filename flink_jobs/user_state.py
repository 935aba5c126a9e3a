"""Stage keyed by user: the Flink adapter around :mod:`flink_jobs.user_steps`.

The steps (session, counts, user-owned MF parameters, impression->reward join, erasure) are
pure and tested alone (``tests/unit/flink_jobs/``); this operator only reads and writes the
user's keyed state, registers the timers the steps ask for, moves metrics and routes what the
steps return (``route``). Item-owned parameters are read from the steps' :class:`ItemReplica`;
the owner's snapshots come back through a Kafka topic inside the batches (``UserBatcher.java``
keeps the newest per item in its broadcast state, so a restored subtask's replica starts warm).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapState, MapStateDescriptor, ValueStateDescriptor

from flink_jobs.attribution import ExperimentTally, merge_tallies
from flink_jobs.batching import BARRIER_OR_END, CHECKPOINT, CurrentKey, pack_messages, quiet_keys, read_user_batch
from flink_jobs.collector import Collector
from flink_jobs.messages import (
    BanditFeedback,
    ClosedSession,
    DeleteKeys,
    EraseUser,
    ForgetScope,
    ItemSnapshot,
    ItemTouch,
    ItemTouches,
    ModelProgress,
    RedisWrite,
    RedisWrites,
    event_of,
)
from flink_jobs.metrics import BatchedCount, JvmGauge
from flink_jobs.redis_outbox import RedisOutbox
from flink_jobs.redis_writer import RedisWriter
from flink_jobs.refresh_schedule import RefreshSchedule
from flink_jobs.routing import (
    CLOSED_SESSION,
    TO_BANDITS,
    TO_EXPERIMENTS,
    TO_ITEMS,
    TO_MODEL,
    Message,
    message,
    raw_message,
    to_redis,
)
from flink_jobs.user_steps import (
    CancelTimer,
    EventTimer,
    LateEvent,
    RefreshTimer,
    RewardUnmatched,
    UserRecord,
    UserStageConfig,
    UserSteps,
    session_payload,
)
from online_models.drift import DriftAlarm
from schemas import EventType, ServedList

MODEL_KEY = "mf"  # the one key of the model-metadata stage

__all__ = ["MODEL_KEY", "UserStageConfig", "UserState", "route", "session_payload",
           "subtask_index"]


class ImpressionsState:
    """A user's pending impressions (``MapState``) as :class:`flink_jobs.user_steps.Impressions`.

    Each access first makes the user the backend's current key (a batch holds many users).
    """

    def __init__(self, state: MapState, keys: CurrentKey) -> None:
        self.state = state
        self.keys = keys
        self.user_id = ""

    def of(self, user_id: str) -> ImpressionsState:
        self.user_id = user_id
        return self

    def get(self, request_id: str) -> Any:
        self.keys.use(self.user_id)
        return self.state.get(request_id)

    def __setitem__(self, request_id: str, value: Any) -> None:
        self.keys.use(self.user_id)
        self.state.put(request_id, value)

    def __delitem__(self, request_id: str) -> None:
        self.keys.use(self.user_id)
        self.state.remove(request_id)

    def items(self) -> Iterable[tuple[str, Any]]:
        self.keys.use(self.user_id)
        return list(self.state.items())

    def clear(self) -> None:
        self.keys.use(self.user_id)
        self.state.clear()


class UserState(KeyedProcessFunction):
    """``keyBy(user_id)``, one call per micro-batch (``flink_jobs/batching.py``); users held in memory.

    A user's record is read from keyed state once, kept as a plain object while its events arrive,
    and written back to keyed state in the batch the batcher sends before every checkpoint
    barrier (flag ``CHECKPOINT``), so each checkpoint and savepoint holds every user as of that
    barrier, and a restore or rescale starts with an empty cache. Between barriers each batch also
    writes back up to ``write_back_per_batch`` users unchanged for ``write_back_quiet_ms``, oldest
    first, so the batch before a barrier (which holds the barrier back) has little left to write.
    Score refreshes are kept here (not a Flink timer per user; ``RefreshSchedule``: at the end of the
    batch for a user not refreshed for ``score_refresh_ms``, else that long after the change), and
    the batch before a barrier runs all, so none is pending in a checkpoint. Session
    and impression deadlines stay Flink event-time timers. A batch's item snapshots from the item
    owner are taken into the replica before its records.
    """

    def __init__(self, config: UserStageConfig, writer: RedisWriter, flush_ms: int, *,
                 write_back_per_batch: int = 0, write_back_quiet_ms: int = 1000,
                 max_cached_users: int = 200_000, gc_every_ms: int = 0) -> None:
        self.config = config
        self.writer = writer
        self.flush_ms = flush_ms
        self.write_back_per_batch = write_back_per_batch
        self.write_back_quiet_s = write_back_quiet_ms / 1000
        self.max_cached_users = max_cached_users
        self.gc_every_s = gc_every_ms / 1000

    def open(self, runtime_context: RuntimeContext) -> None:
        self.collector = Collector(self.gc_every_s)  # between batches, instead of CPython's automatic one
        self.collector.start()
        # One pickled dict of primitives per user (session bytes, user-factor bytes, counts), as ever.
        self.user = runtime_context.get_state(ValueStateDescriptor("user", Types.PICKLED_BYTE_ARRAY()))
        self.keys = CurrentKey(runtime_context)
        self.impressions = ImpressionsState(runtime_context.get_map_state(
            MapStateDescriptor("impressions", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        ), self.keys)
        self.steps = UserSteps(self.config, subtask_index(runtime_context))
        self.cache: dict[str, UserRecord] = {}
        self.dirty: dict[str, float] = {}  # changed users -> monotonic time of the change, oldest first
        self.now = time.monotonic()
        self.refreshes = RefreshSchedule(self.config.score_refresh_ms / 1000)
        metrics = runtime_context.get_metrics_group()
        # The users' keys are written from here, not through a sink stage: no pickling of payloads.
        self.outbox = RedisOutbox(self.writer, self.flush_ms, metrics)
        self.writer.open()
        # Batched: each inc is a call into the JVM; flushed once per Python call.
        self.processed = {t: BatchedCount(metrics.add_group("type", t.value).counter("events_processed"))
                          for t in EventType}
        self.late = BatchedCount(metrics.counter("late_events"), every=1 << 30)
        self.served = BatchedCount(metrics.counter("served_lists"), every=1 << 30)
        self.metrics = metrics
        self.drift_alarms: dict[str, Any] = {}
        if self.steps.drift is not None:  # every detector's counter from the start: alert rules see 0, not nothing
            for signal in ("error", *(f"mix:{kind.value}" for kind in self.steps.drift.types)):
                self._drift_alarms(signal)
        self.tallies: list[ExperimentTally] = []  # this batch's attribution counts
        self.unmatched = BatchedCount(metrics.counter("rewards_unmatched"), every=1 << 30)
        self.items_known = JvmGauge(metrics.counter("item_replica_size"))
        self.staleness = JvmGauge(metrics.counter("item_params_staleness_ms"))
        self.staleness_ms = 0
        self.gauges_set_at = 0.0

    def close(self) -> None:
        # PyFlink calls this at the end of the input, after the last timers: their writes go out now.
        self.outbox.flush()
        self.writer.close()
        self.collector.stop()

    # -- batches and timers -----------------------------------------------------------------

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        self.keys.current = None  # Flink set the batch's key
        self.now = time.monotonic()
        flags, records, snapshots = read_user_batch(batch)
        if snapshots:
            self._take_snapshots(snapshots)
        rows: list[Message] = []
        touches: list[ItemTouch] = []
        self.tallies = []
        for user_id, value in records:
            event = event_of(value)
            if isinstance(event, ServedList):  # a list served to the user (attribution)
                self.served.add()
                record, outputs = self.steps.on_served(self._record(user_id), event)
            else:
                self.processed[event.type].add()
                record, outputs = self.steps.on_event(self._record(user_id), event, self.impressions.of(user_id))
            self._keep(user_id, record)
            self._emit(user_id, outputs, ctx, rows, touches)
        # One message per item and batch: the owner applies the summed update (messages.ItemTouches).
        rows.extend(message(TO_ITEMS, merged.item_id, merged) for merged in ItemTouches.merge(touches))
        rows.extend(message(TO_EXPERIMENTS, tally.experiment, tally) for tally in merge_tallies(self.tallies))
        self._refresh(rows, everyone=bool(flags & BARRIER_OR_END))
        if flags & CHECKPOINT:
            self._write_back()
        else:
            self._write_back_quiet()
        if flags & BARRIER_OR_END or self.outbox.due():  # always before a barrier: no checkpoint holds an unsent write
            self.outbox.flush()
        self._flush_metrics()
        if not flags & BARRIER_OR_END and self.collector.due(self.now):  # a checkpoint does not wait for it
            self.collector.collect(self.now)
        if rows:
            yield pack_messages(rows)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[bytes]:
        user_id = ctx.get_current_key()
        self.keys.current = user_id  # Flink set the timer's key
        rows: list[Message] = []
        record = self._record(user_id)
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:  # left by a job before batching: refresh now
            if record is None:
                return
            record, outputs = self.steps.on_refresh(user_id, record)
        else:
            before = None if record is None else (record.session_timer, record.session)
            record, outputs = self.steps.on_event_timer(user_id, record, timestamp, self.impressions.of(user_id),
                                                        ctx.timer_service().current_watermark())
            if before is not None and record is not None and before == (record.session_timer, record.session):
                record = None  # unchanged (an impression expired: that is in its own state already)
        self._emit(user_id, outputs, ctx, rows)
        if record is not None:
            # Written through: timers fire on a watermark, between batches, and at the end of the
            # input no batch follows to write the user back.
            self.cache[user_id] = record
            self.dirty.pop(user_id, None)
            self.keys.use(user_id)
            self.user.update(record.to_state())
        # With the next batch (every tick at the latest), not one Redis round trip per timer; the
        # timers of the end of the input are flushed by ``close``.
        if self.outbox.due():
            self.outbox.flush()
        self._flush_metrics()
        if rows:
            yield pack_messages(rows)

    def _take_snapshots(self, snapshots: list[bytes]) -> None:
        """The item owner's snapshots into the replica (the newest per item, from ``UserBatcher.java``)."""
        owner_time_ms = 0
        for value in snapshots:
            snapshot = ItemSnapshot.from_bytes(value)
            self.steps.replica.take(snapshot)
            owner_time_ms = max(owner_time_ms, snapshot.owner_time_ms)
        self.staleness_ms = max(0, time.time_ns() // 1_000_000 - owner_time_ms)

    # -- users in memory ----------------------------------------------------------------------

    def _record(self, user_id: str) -> UserRecord | None:
        record = self.cache.get(user_id)
        if record is None:
            self.keys.use(user_id)
            state = self.user.value()
            if state is not None:
                record = self.cache[user_id] = UserRecord.from_state(state)
        return record

    def _keep(self, user_id: str, record: UserRecord | None) -> None:
        if record is None:  # erased (or never there): gone from memory and from keyed state
            self.cache.pop(user_id, None)
            self.dirty.pop(user_id, None)
            self.refreshes.drop(user_id)
            self.keys.use(user_id)
            self.user.clear()
        else:
            self.cache[user_id] = record
            self.dirty.pop(user_id, None)  # to the end: the dict stays in order of the last change
            self.dirty[user_id] = self.now

    def _write_back(self) -> None:
        """Before a barrier: every changed user to keyed state, so the checkpoint holds it."""
        for user_id in self.dirty:
            self.keys.use(user_id)
            self.user.update(self.cache[user_id].to_state())
        self.dirty.clear()
        if len(self.cache) > self.max_cached_users:  # all are clean now: any may go
            self.cache.clear()

    def _write_back_quiet(self) -> None:
        """Between barriers: a few users unchanged for a while, oldest first (the barrier's batch stays small).

        A user changed again later is dirty again and written again at the next barrier at the latest,
        so every checkpoint still holds every user as of its barrier.
        """
        for user_id in quiet_keys(self.dirty, self.now - self.write_back_quiet_s, self.write_back_per_batch,
                                   skip=self.refreshes):
            del self.dirty[user_id]
            self.keys.use(user_id)
            self.user.update(self.cache[user_id].to_state())

    def _refresh(self, rows: list[Message], everyone: bool) -> None:
        """Users whose score refresh is due (all, before a barrier): their Redis keys and progress."""
        for user_id in self.refreshes.take(time.monotonic(), everyone):
            record, outputs = self.steps.on_refresh(user_id, self.cache[user_id])
            self._keep(user_id, record)
            for output in outputs:
                self._send(output, rows)

    def _emit(self, user_id: str, outputs: list[Any], ctx: Any, rows: list[Message],
              touches: list[ItemTouch] | None = None) -> None:
        """Route the steps' messages (item touches to ``touches`` when given); set timers; count."""
        for output in outputs:
            if touches is not None and isinstance(output, ItemTouch):
                touches.append(output)
            elif isinstance(output, ExperimentTally):
                self.tallies.append(output)
            elif isinstance(output, EventTimer):
                self.keys.use(user_id)
                ctx.timer_service().register_event_time_timer(output.at_ms)
            elif isinstance(output, CancelTimer):
                self.keys.use(user_id)
                ctx.timer_service().delete_event_time_timer(output.at_ms)
            elif isinstance(output, RefreshTimer):
                self.refreshes.want(user_id, self.now)
            elif isinstance(output, LateEvent):
                self.late.add()
            elif isinstance(output, RewardUnmatched):
                self.unmatched.add()
            elif isinstance(output, DriftAlarm):
                self._drift_alarms(output.signal).inc()
                self._send(output, rows)
            else:
                self._send(output, rows)

    def _drift_alarms(self, signal: str) -> Any:
        """The ``drift_alarms`` counter of one detector (``error``, ``mix:<event type>``)."""
        counter = self.drift_alarms.get(signal)
        if counter is None:
            counter = self.drift_alarms[signal] = self.metrics.add_group("signal", signal).counter("drift_alarms")
        return counter

    def _send(self, output: Any, rows: list[Message]) -> None:
        """Redis-bound messages to the outbox; the others as rows for their stage."""
        if isinstance(output, RedisWrite | RedisWrites | EraseUser | DeleteKeys):
            self.outbox.add(output)
        else:
            rows.append(route(output, self.config.redis_shards))

    def _flush_metrics(self) -> None:
        for count in (*self.processed.values(), self.late, self.unmatched, self.served):
            count.flush()
        if (now := time.monotonic()) - self.gauges_set_at >= 1.0:  # each set is a call into the JVM
            self.gauges_set_at = now
            self.items_known.set(len(self.steps.replica.items))
            self.staleness.set(self.staleness_ms)


def route(output: Any, redis_shards: int) -> Message:
    """A message of the user stage as a row for its consumer (``flink_jobs/routing.py``)."""
    if isinstance(output, ItemTouch | ItemTouches):
        return message(TO_ITEMS, output.item_id, output)
    if isinstance(output, BanditFeedback | ForgetScope):
        return message(TO_BANDITS, output.scope_key, output)
    if isinstance(output, ModelProgress | DriftAlarm):
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
