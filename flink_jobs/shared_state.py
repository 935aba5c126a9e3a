"""Stages that own state shared by many users: item parameters, bandit arms, popularity, model metadata.

Flink adapters around the pure steps of :mod:`flink_jobs.shared_steps` (state access, timers, routing).

Each is keyed by what owns the state (item id, bandit scope, segment, model name), applies
what the user stage sends, and writes its Redis key at most every ``refresh_ms`` (a
processing-time timer), plus once more when the input ends (an event-time timer at the end
of time fires when the final watermark arrives).

Popularity is counted by the item owners (an item's decayed count per segment is item-owned
state, fed by the same :class:`ItemTouch` as its parameters); at most every ``refresh_ms`` an
owner sends the counts that changed to the segment's stage, which ranks them. Counting where
the touch already goes saves a message per event and segment.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from flink_jobs.batching import CHECKPOINT, END, CurrentKey, due_keys, pack_messages, quiet_keys, read_batch
from flink_jobs.messages import DeleteKeys, ForgetScope, ItemSnapshot, PopularityCount, RedisWrite
from flink_jobs.routing import ITEM_SNAPSHOT, TO_POPULARITY, Message, message, raw_message, to_redis
from flink_jobs.shared_steps import BanditArms as BanditSteps
from flink_jobs.shared_steps import Coalesced, ExperimentTotals, ItemOwner, ModelTotals, segment_ranking
from online_models.mf import MFConfig
from schemas.redis_keys import RedisKeys

END_OF_TIME = 2**63 - 2  # fires on the final watermark (Long.MAX_VALUE) of a bounded input


@dataclass(frozen=True)
class SharedStageConfig:
    """What these stages need from the settings."""

    keys: RedisKeys
    mf: MFConfig
    bandit_policy: str
    refresh_ms: int
    redis_shards: int
    popularity_refresh_ms: int = 5000  # ranking a segment reads all its items: less often than the rest
    popularity_top_n: int = 100
    popularity_half_life_ms: int = 24 * 3600 * 1000
    model_name: str = "mf"
    model_version: str = "mf-v1"
    value_format: str = "compact"  # "legacy": format-1 item hashes
    attribution_window_ms: int = 30 * 60 * 1000
    bandit_hyperparameters: tuple[tuple[str, Any], ...] = ()  # the bandit policy's (LinUCB: alpha, features)
    learner: str = "explicit"  # settings.mf_learner: what the model key reports (RMSE, or HitRate@k)
    ranking_k: int = 10
    write_back_per_batch: int = 0  # quiet keys written back between barriers per batch (0: all at the barrier)
    write_back_quiet_ms: int = 1000

    def route(self, output: Any) -> Message:
        """A message of these stages as a row for its consumer (``flink_jobs/routing.py``)."""
        if isinstance(output, PopularityCount):
            return message(TO_POPULARITY, output.segment, output)
        if isinstance(output, ItemSnapshot):
            return raw_message(ITEM_SNAPSHOT, output.to_bytes())  # for the user side's replicas
        return to_redis(output, self.redis_shards)


class _CoalescedWrites(KeyedProcessFunction):
    """Applies updates to one value per key (``self.steps.apply``); writes it at most every ``refresh_ms``.

    One call per micro-batch (``flink_jobs/batching.py``). Values are held in memory between
    checkpoints and written to keyed state (:class:`Coalesced`, one value per key) in the batch
    the batcher sends before each barrier; writes that are due are kept as due times here, run
    when a batch comes, and all run before a barrier and at the end of input. Between barriers each
    batch also writes back a few keys unchanged for a while (``write_back_per_batch``), so the
    batch before a barrier has fewer to write. Timers are only those a job before batching left in
    a savepoint (handled as that job did).
    """

    def __init__(self, config: SharedStageConfig) -> None:
        self.config = config
        self.steps = self.make_steps(config)

    def make_steps(self, config: SharedStageConfig) -> Any:
        raise NotImplementedError

    def refresh_ms(self) -> int:
        return self.config.refresh_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        self.entry = runtime_context.get_state(ValueStateDescriptor("entry", Types.PICKLED_BYTE_ARRAY()))
        self.keys = CurrentKey(runtime_context)
        self.cache: dict[str, Coalesced] = {}
        self.dirty: dict[str, float] = {}  # key -> when it last changed, oldest change first
        self.now = time.monotonic()  # the batch's time
        self.due: dict[str, float] = {}

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        self.keys.current = None  # Flink set the batch's key
        flags, records = read_batch(batch)
        rows: list[Message] = []
        self.now = time.monotonic()
        for key, value in records:
            self.on_update(key, pickle.loads(value), rows)
        self._write_due(rows, everyone=bool(flags & (CHECKPOINT | END)), final=bool(flags & END))
        if flags & CHECKPOINT:
            self._write_back()
        else:
            self._write_back_quiet()
        if rows:
            yield pack_messages(rows)

    def on_update(self, key: str, update: Any, rows: list[Message]) -> None:
        entry = self._entry(key)
        entry.value = self.steps.apply(entry.value, update)  # the key is in the update: no call into the JVM
        entry.event_time_ms = max(entry.event_time_ms, update.event_time_ms)
        self._changed(key)
        self.due.setdefault(key, self.now + self.refresh_ms() / 1000)

    def forget(self, key: str) -> None:
        """Drop the key's value from memory and from keyed state."""
        self.cache.pop(key, None)
        self.dirty.pop(key, None)
        self.due.pop(key, None)
        self.keys.use(key)
        self.entry.clear()

    def _entry(self, key: str) -> Coalesced:
        entry = self.cache.get(key)
        if entry is None:
            self.keys.use(key)
            entry = self.cache[key] = Coalesced.from_state(self.entry.value(), self.steps.value_from_state)
        return entry

    def _write_due(self, rows: list[Message], everyone: bool, final: bool) -> None:
        now = time.monotonic()
        for key in due_keys(self.due, now, everyone):
            del self.due[key]
            entry = self.cache[key]
            rows.extend(self.config.route(output) for output in self.steps.writes(key, entry, final=final))
            self._changed(key)  # writes may change the value (e.g. an item's changed segments)

    def _write_back(self) -> None:
        for key in self.dirty:
            self.keys.use(key)
            self.entry.update(self.cache[key].to_state(self.steps.value_to_state))
        self.dirty.clear()
        if len(self.cache) > 200_000:  # all are clean now: any may go
            self.cache.clear()

    def _write_back_quiet(self) -> None:
        """Between barriers: a few keys unchanged for a while and not due, oldest change first.

        A key changed again later is dirty again and written again at the next barrier at the latest,
        so every checkpoint still holds every key as of its barrier.
        """
        quiet_since = self.now - self.config.write_back_quiet_ms / 1000
        for key in quiet_keys(self.dirty, quiet_since, self.config.write_back_per_batch, skip=self.due):
            del self.dirty[key]
            self.keys.use(key)
            self.entry.update(self.cache[key].to_state(self.steps.value_to_state))

    def _changed(self, key: str) -> None:
        self.dirty.pop(key, None)  # to the end: the dict stays in order of the last change
        self.dirty[key] = self.now

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        key = ctx.get_current_key()
        self.keys.current = key  # Flink set the timer's key
        entry = self.cache.get(key)
        if entry is None and (state := self.entry.value()) is not None:
            entry = Coalesced.from_state(state, self.steps.value_from_state)
        if entry is None:
            return
        entry.due = False
        rows = [self.config.route(output)
                for output in self.steps.writes(key, entry, final=timestamp >= END_OF_TIME)]
        self.cache[key] = entry
        self.dirty.pop(key, None)
        self.entry.update(entry.to_state(self.steps.value_to_state))  # written through: see user_state.on_timer
        if rows:
            yield pack_messages(rows)


class ItemParamsOwner(_CoalescedWrites):
    """``keyBy(item_id)``: the item's parameters and popularity (:class:`flink_jobs.shared_steps.ItemOwner`)."""

    def make_steps(self, config: SharedStageConfig) -> ItemOwner:
        return ItemOwner(config.mf, config.keys, config.popularity_half_life_ms, config.value_format)


class BanditArms(_CoalescedWrites):
    """``keyBy(scope key)``: one bandit per scope; a user's is erased with the user."""

    def make_steps(self, config: SharedStageConfig) -> BanditSteps:
        return BanditSteps(config.bandit_policy, config.keys, config.bandit_hyperparameters)

    def on_update(self, key: str, update: Any, rows: list[Message]) -> None:
        if not isinstance(update, ForgetScope):
            super().on_update(key, update, rows)
            return
        self.forget(key)
        redis_key = self.config.keys.bandit(self.config.bandit_policy, update.scope_key)
        deletion = DeleteKeys((redis_key,), update.event_time_ms, update.scope_key)
        rows.append(to_redis(deletion, self.config.redis_shards))


class ModelMetadata(_CoalescedWrites):
    """``keyBy(model name)``: the model's totals (:class:`flink_jobs.shared_steps.ModelTotals`)."""

    def make_steps(self, config: SharedStageConfig) -> ModelTotals:
        return ModelTotals(config.model_version, config.mf.n_factors, config.keys, config.learner, config.ranking_k)


class ExperimentResults(_CoalescedWrites):
    """``keyBy(experiment)``: its results by variant (:class:`flink_jobs.shared_steps.ExperimentTotals`)."""

    def make_steps(self, config: SharedStageConfig) -> ExperimentTotals:
        return ExperimentTotals(config.keys, config.attribution_window_ms)


class SegmentPopularity(KeyedProcessFunction):
    """``keyBy(segment)``: the segment's items ranked by decayed count; writes the top-n.

    The counts come from the item owners (one :class:`PopularityCount` per item and refresh,
    replacing the item's previous one), one micro-batch per call. A segment's counts are read
    from ``MapState`` once, kept in memory, and the items that changed are written back in the
    batch before each barrier, with the segment's latest event time (``meta``).
    """

    def __init__(self, config: SharedStageConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.counts = runtime_context.get_map_state(
            MapStateDescriptor("item-counts", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        #: A :class:`Coalesced` without a value (latest event time, write due).
        self.meta = runtime_context.get_state(ValueStateDescriptor("meta", Types.PICKLED_BYTE_ARRAY()))
        self.keys = CurrentKey(runtime_context)
        self.segments: dict[str, tuple[Coalesced, dict[str, Any]]] = {}
        self.changed: dict[str, set[str]] = {}
        self.due: dict[str, float] = {}

    def process_element(self, batch: bytes, ctx: KeyedProcessFunction.Context) -> Iterator[bytes]:
        self.keys.current = None  # Flink set the batch's key
        flags, records = read_batch(batch)
        for segment, value in records:
            count: PopularityCount = pickle.loads(value)
            meta, counts = self._segment(segment)
            counts[count.item_id] = (count.landmark_ms, count.count)
            meta.event_time_ms = max(meta.event_time_ms, count.event_time_ms)
            self.changed.setdefault(segment, set()).add(count.item_id)
            self.due.setdefault(segment, time.monotonic() + self.config.popularity_refresh_ms / 1000)
        everyone = bool(flags & (CHECKPOINT | END))
        now = time.monotonic()
        rows = []
        for segment in due_keys(self.due, now, everyone):
            del self.due[segment]
            rows.append(self._ranking(segment))
        if flags & CHECKPOINT:
            self._write_back()
        if rows:
            yield pack_messages(rows)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[bytes]:
        """Timers only a job before batching left in a savepoint: rank the segment now."""
        segment = ctx.get_current_key()
        self.keys.current = segment
        if self.meta.value() is not None:
            yield pack_messages([self._ranking(segment)])

    def _segment(self, segment: str) -> tuple[Coalesced, dict[str, Any]]:
        held = self.segments.get(segment)
        if held is None:
            self.keys.use(segment)
            held = self.segments[segment] = (Coalesced.from_state(self.meta.value()), dict(self.counts.items()))
        return held

    def _ranking(self, segment: str) -> Message:
        meta, counts = self._segment(segment)
        payload = segment_ranking(segment, counts.items(), meta.event_time_ms,
                                  top_n=self.config.popularity_top_n, half_life_ms=self.config.popularity_half_life_ms)
        write = RedisWrite(self.config.keys.popularity(segment), meta.event_time_ms, payload, segment)
        return to_redis(write, self.config.redis_shards)

    def _write_back(self) -> None:
        for segment, items in self.changed.items():
            meta, counts = self.segments[segment]
            self.keys.use(segment)
            for item in items:
                self.counts.put(item, counts[item])
            meta.due = False
            self.meta.update(meta.to_state())
        self.changed.clear()
