"""Stage keyed by user: session, lifetime counts, user-owned MF parameters, impression->reward join.

A thin adapter: the session is ``online_models.session.step``, learning is
``online_models.mf.learn_step``; this operator only moves state in and out of Flink and routes
what they return. Item-owned parameters are read from an :class:`ItemTable` replica; the update
this subtask makes to an item is applied to the replica at once and sent to the item's owner
(``shared_state.ItemParamsOwner``) inside an :class:`ItemTouch`; the owner's snapshots come back on
the broadcast input (through a compacted Kafka topic) and replace replica rows that are older,
so each item's parameters reach every subtask at a bounded, measured staleness. Snapshots are
also kept in broadcast state, which is checkpointed: a restored subtask warms its replica
from it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from pyflink.common import Row, Types
from pyflink.datastream import KeyedBroadcastProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from flink_jobs.messages import (
    BanditFeedback,
    ClosedSession,
    EraseUser,
    ForgetScope,
    ItemSnapshot,
    ItemTouch,
    ModelProgress,
    RedisWrite,
    RedisWrites,
)
from flink_jobs.metrics import BatchedCount, JvmGauge
from flink_jobs.routing import CLOSED_SESSION, TO_BANDITS, TO_ITEMS, TO_MODEL, message, raw_message, to_redis
from online_models import session as sessions
from online_models.bandits import BanditScope, scope_key
from online_models.item_table import ItemTable
from online_models.mf import GlobalParams, ItemParams, MFConfig, UserParams, initial_user, learn_step, predict
from online_models.popularity import InteractionWeights
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys

MODEL_KEY = "mf"  # the one key of the model-metadata stage
#: Broadcast state: item id -> latest ItemSnapshot bytes seen from the owner.
ITEM_PARAMS = MapStateDescriptor("item-params", Types.STRING(), Types.PICKLED_BYTE_ARRAY())


_MAX_UNACKED = 256  # own item updates kept per item until the owner's snapshot includes them
_REPORT_EVERY = 500  # a user's learned events between ModelProgress reports (also sent on the user's timers)
#: learned, squared error, absolute error, rewards matched, rewards unmatched, late events
_NO_PROGRESS = (0, 0.0, 0.0, 0, 0, 0)


def _pending(record: dict[str, Any]) -> list[Any]:
    """The user's progress not yet reported to the model stage.

    It lives in the user's keyed state, so a restore rolls it back together with what it counts:
    model counters stay exact across failures (an operator-level tally would lose what it held).
    """
    pending: list[Any] = record.setdefault("pending", list(_NO_PROGRESS))
    return pending


@dataclass(frozen=True)
class UserStageConfig:
    """What the user stage needs from the settings (plain values: it is pickled into the job)."""

    mf: MFConfig
    keys: RedisKeys
    scopes: tuple[BanditScope, ...]
    session_gap_ms: int
    impression_ttl_ms: int
    top_k: int
    score_refresh_ms: int
    redis_shards: int


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
        self.impressions = runtime_context.get_map_state(
            MapStateDescriptor("impressions", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self.items = ItemTable(self.config.mf)
        self.glob = GlobalParams()
        self.weights = InteractionWeights()
        self._last_event_ms = 0
        metrics = runtime_context.get_metrics_group()
        # Batched: each inc is a call into the JVM; flushed on the user's timers too, so exact soon after.
        self.processed = {t: BatchedCount(metrics.add_group("type", t.value).counter("events_processed"))
                          for t in EventType}
        self.late = metrics.counter("late_events")
        self.unmatched = metrics.counter("rewards_unmatched")
        self.items_known = JvmGauge(metrics.counter("item_replica_size"))
        self.staleness_ms = 0
        self.subtask = subtask_index(runtime_context)
        self.snapshot_versions: dict[str, int] = {}
        self.update_seq: dict[str, int] = {}
        self.unacked: dict[str, list[tuple[int, float, np.ndarray]]] = {}
        self.staleness = JvmGauge(metrics.counter("item_params_staleness_ms"))
        self.gauges_set_at = 0.0
        self.warm = False

    # -- item snapshots (broadcast input) ---------------------------------------------------

    def process_broadcast_element(self, value: bytes, ctx: KeyedBroadcastProcessFunction.Context) -> None:
        snapshot = ItemSnapshot.from_bytes(value)
        ctx.get_broadcast_state(ITEM_PARAMS).put(snapshot.item_id, bytes(value))
        self._take(snapshot)
        self.staleness_ms = max(0, time.time_ns() // 1_000_000 - snapshot.owner_time_ms)

    def _take(self, snapshot: ItemSnapshot) -> None:
        """Replica row := owner's snapshot + this subtask's updates the snapshot does not include yet."""
        item = snapshot.item_id
        if snapshot.version <= self.snapshot_versions.get(item, 0):
            return  # an older snapshot overtaken on another partition
        self.snapshot_versions[item] = snapshot.version
        acked = snapshot.acks.get(self.subtask, 0)
        pending = [d for d in self.unacked.get(item, ()) if d[0] > acked]
        self.unacked[item] = pending
        params = ItemParams.from_bytes(snapshot.params)
        for _, d_bias, d_factors in pending:
            params = ItemParams(params.bias + d_bias, params.factors + d_factors)
        self.items.put(item, params, self.items.version(item) + 1)

    def _warm_replica(self, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> None:
        """After a (re)start the replica is empty: fill it from the checkpointed snapshots."""
        for _, value in ctx.get_broadcast_state(ITEM_PARAMS).items():
            self._take(ItemSnapshot.from_bytes(value))
        self.warm = True

    # -- events -----------------------------------------------------------------------------

    def process_element(self, event: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Iterator[Any]:
        for output in self._process(event, ctx):
            yield route(output, self.config.redis_shards)

    def _process(self, event: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Iterator[Any]:
        if not self.warm:
            self._warm_replica(ctx)
        self.processed[event.type].add()
        self._last_event_ms = max(self._last_event_ms, event.event_time_ms)
        if event.type is EventType.ERASE:
            erased = self.user.value()
            if erased is not None:
                yield from self._report(erased)  # what the user's events taught the model stays counted
            self.user.clear()
            self.impressions.clear()
            yield EraseUser(event.user_id, event.event_time_ms)
            if BanditScope.USER in self.config.scopes:  # the user's own bandit is the user's data too
                yield ForgetScope(scope_key(BanditScope.USER, event), event.event_time_ms)
            return
        record = self.user.value() or {"counts": {}, "learned": 0, "session": None, "factors": None, "t": 0}
        record["counts"][event.type.value] = record["counts"].get(event.type.value, 0) + 1
        record["t"] = max(record["t"], event.event_time_ms)
        yield from self._session(record, event, ctx)
        yield from self._rewards(record, event, ctx)
        if event.item_id is not None:
            touch = self._touch(record, event)
            if touch is not None:
                yield touch
            if _pending(record)[0] >= _REPORT_EVERY:
                yield from self._report(record)
        if not record.get("due"):  # in the record, not a state of its own: one state write per event
            record["due"] = True
            now = ctx.timer_service().current_processing_time()
            ctx.timer_service().register_processing_time_timer(now + self.config.score_refresh_ms)
        self.user.update(record)

    def _session(
        self, record: dict[str, Any], event: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext
    ) -> Iterator[Any]:
        state = sessions.SessionState.from_bytes(record["session"]) if record["session"] else None
        state, outputs = sessions.step(state, event, gap_ms=self.config.session_gap_ms)
        record["session"] = None if state is None else state.to_bytes()
        if state is not None and not record.get("session_timer"):
            # One timer at a time: when it fires early (the session went on), on_timer sets the next.
            self._set_session_timer(record, state, ctx)
        yield from self._session_outputs(record, outputs)

    def _set_session_timer(self, record: dict[str, Any], state: sessions.SessionState, ctx: Any) -> None:
        deadline = sessions.deadline_ms(state, gap_ms=self.config.session_gap_ms)
        ctx.timer_service().register_event_time_timer(deadline)
        record["session_timer"] = deadline

    def _session_outputs(self, record: dict[str, Any], outputs: list[sessions.SessionOutput]) -> Iterator[Any]:
        for output in outputs:
            if isinstance(output, sessions.SessionSummary):
                yield ClosedSession(orjson.dumps(_summary_payload(output)))
            else:
                self.late.inc()
                _pending(record)[5] += 1

    def _rewards(
        self, record: dict[str, Any], event: Event, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext
    ) -> Iterator[Any]:
        if event.type is EventType.IMPRESSION and event.decision is not None:
            expires = event.event_time_ms + self.config.impression_ttl_ms
            scopes = [scope_key(scope, event) for scope in self.config.scopes]
            self.impressions.put(event.decision.request_id, (event.decision.arm, scopes, expires))
            ctx.timer_service().register_event_time_timer(expires)
        elif event.type is EventType.CLICK and (request_id := event.context.get("request_id")):
            pending = self.impressions.get(request_id)
            if pending is None:  # unknown or expired impression: counted, never silently lost
                self.unmatched.inc()
                _pending(record)[4] += 1
                return
            self.impressions.remove(request_id)
            _pending(record)[3] += 1
            arm, scopes, _ = pending
            for key in scopes:
                yield BanditFeedback(key, arm, 1.0, event.event_time_ms)

    def _touch(self, record: dict[str, Any], event: Event) -> ItemTouch | None:
        """Learn from ``event`` (when it has a target) and say what it did to the item, in one message."""
        assert event.item_id is not None
        weight = self.weights.weight(event.type)
        segment = event.context.get("segment")
        target = self.config.mf.targets.target(event)
        if target is None:
            return ItemTouch(event.item_id, event.event_time_ms, weight, segment) if weight > 0 else None
        cfg = self.config.mf
        user = UserParams.from_bytes(record["factors"]) if record["factors"] else initial_user(cfg, event.user_id)
        item = self.items.get(event.item_id)
        error = predict(user, item, self.glob) - target  # prequential: predict, then learn
        user, new_item, self.glob = learn_step(user, item, self.glob, target, cfg)
        self.items.put(event.item_id, new_item, self.items.version(event.item_id) + 1)
        record["factors"] = user.to_bytes()
        record["learned"] += 1
        p = _pending(record)
        p[0] += 1
        p[1] += error * error
        p[2] += abs(error)
        d_bias, d_factors = new_item.bias - item.bias, new_item.factors - item.factors
        seq = self.update_seq[event.item_id] = self.update_seq.get(event.item_id, 0) + 1
        pending = self.unacked.setdefault(event.item_id, [])
        pending.append((seq, d_bias, d_factors))
        if len(pending) > _MAX_UNACKED:  # no snapshots coming (e.g. a bounded run): keep memory bounded
            del pending[: len(pending) - _MAX_UNACKED]
        return ItemTouch(event.item_id, event.event_time_ms, weight, segment, d_bias,
                         d_factors.astype("<f8").tobytes(), self.subtask, seq)

    # -- timers -----------------------------------------------------------------------------

    def on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Iterator[Any]:
        for output in self._on_timer(timestamp, ctx):
            yield route(output, self.config.redis_shards)

    def _on_timer(self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext) -> Iterator[Any]:
        for count in self.processed.values():
            count.flush()
        if (now := time.monotonic()) - self.gauges_set_at >= 1.0:  # each set is a call into the JVM
            self.gauges_set_at = now
            self.items_known.set(len(self.items))
            self.staleness.set(self.staleness_ms)
        user_id = ctx.get_current_key()
        record = self.user.value()
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            if record is not None:
                record["due"] = False
                yield from self._snapshot(user_id, record)
                yield from self._report(record)
                self.user.update(record)
            return
        yield from self._expire_impressions(timestamp)
        if record is None:
            return
        # Event-time timers also fire on the final watermark of a bounded input, where
        # processing-time timers do not: report progress here too so none is left behind.
        yield from self._report(record)
        if record.get("session_timer") == timestamp:
            record["session_timer"] = None
        if record["session"]:
            state = sessions.SessionState.from_bytes(record["session"])
            state, outputs = sessions.on_timer(state, timestamp, gap_ms=self.config.session_gap_ms)
            if outputs:
                record["session"] = None
                yield from self._session_outputs(record, outputs)
                yield from self._snapshot(user_id, record)
            elif not record.get("session_timer"):
                self._set_session_timer(record, state, ctx)  # the session went on past this timer
        self.user.update(record)

    def _expire_impressions(self, timestamp: int) -> Iterator[Any]:
        expired = [(rid, value) for rid, value in self.impressions.items() if value[2] <= timestamp]
        for request_id, (arm, scopes, expires) in expired:
            self.impressions.remove(request_id)
            for key in scopes:
                yield BanditFeedback(key, arm, 0.0, expires)

    def _snapshot(self, user_id: str, record: dict[str, Any]) -> Iterator[RedisWrites]:
        """The user's keys in Redis (counts, live session, factors, top-k scores), as one message."""
        keys, t = self.config.keys, record["t"]
        counts = {"counts": record["counts"], "events": sum(record["counts"].values()), "learned": record["learned"]}
        state = sessions.SessionState.from_bytes(record["session"]) if record["session"] else None
        writes = [
            RedisWrite(keys.counts(user_id), t, counts, user_id),
            RedisWrite(keys.session(user_id), t, session_payload(state), user_id),
        ]
        if record["factors"]:
            user = UserParams.from_bytes(record["factors"])
            seen = [item for _, item in state.recent] if state else []
            top = self.items.top_k(user, self.glob, self.config.top_k, exclude=seen)
            recs = {"items": [[item, score] for item, score in top], "global_mean": self.glob.mean}
            writes.append(RedisWrite(keys.factors(user_id), t, {"bias": user.bias, "factors": user.factors}, user_id))
            writes.append(RedisWrite(keys.recs(user_id), t, recs, user_id))
        yield RedisWrites(tuple(writes), user_id)

    def _report(self, record: dict[str, Any]) -> Iterator[Any]:
        """The user's unreported progress as one ModelProgress; reset in ``record`` (caller saves it)."""
        p = record.get("pending")
        if not p or not any(p):
            return
        yield ModelProgress(p[0], p[1], p[2], p[3], p[4], p[5], self._last_event_ms)
        p[:] = _NO_PROGRESS


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


def session_payload(state: sessions.SessionState | None) -> dict[str, Any]:
    """The live session as the ``session`` Redis key holds it."""
    if state is None:
        return {"open": False}
    return {
        "open": True,
        "session_id": state.session_id,
        "start_ms": state.start_ms,
        "end_ms": state.end_ms,
        "n_events": state.n_events,
        "n_late": state.n_late,
        "counts": dict(state.counts),
        "recent_items": [item for _, item in state.recent],
        "categories": dict(state.categories),
    }


def _summary_payload(summary: sessions.SessionSummary) -> dict[str, Any]:
    return {
        "user_id": summary.user_id,
        "session_id": summary.session_id,
        "start_ms": summary.start_ms,
        "end_ms": summary.end_ms,
        "dwell_ms": summary.dwell_ms,
        "n_events": summary.n_events,
        "n_late": summary.n_late,
        "counts": dict(summary.counts),
        "recent_items": list(summary.recent_items),
        "categories": dict(summary.categories),
        "closed_at_ms": time.time_ns() // 1_000_000,
    }
