"""Stages that own state shared by many users: item parameters, bandit arms, popularity, model metadata.

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

import heapq
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from flink_jobs.messages import (
    BanditFeedback,
    DeleteKeys,
    ForgetScope,
    ItemSnapshot,
    ItemTouch,
    ModelProgress,
    PopularityCount,
    RedisWrite,
)
from flink_jobs.routing import ITEM_SNAPSHOT, TO_POPULARITY, message, raw_message, to_redis
from online_models.bandits import make_bandit
from online_models.mf import ItemParams, MFConfig, initial_item
from online_models.popularity import ALL, add_decayed, decayed_value
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

    def redis_write(self, key: str, event_time_ms: int, payload: Any, route: str) -> Row:
        """A write of ``key``, keyed for its Redis sink shard."""
        return to_redis(RedisWrite(key, event_time_ms, payload, route), self.redis_shards)


def schedule_write(entry: list[Any], ctx: KeyedProcessFunction.Context, refresh_ms: int) -> None:
    """Unless a write is already due for this key: one in ``refresh_ms``, and one at the end of input.

    ``entry`` is the key's ``[value, latest event time, write due]``, kept in one state.
    """
    if entry[2]:
        return
    entry[2] = True
    timers = ctx.timer_service()
    timers.register_processing_time_timer(timers.current_processing_time() + refresh_ms)
    timers.register_event_time_timer(END_OF_TIME)


class _CoalescedWrites(KeyedProcessFunction):
    """Applies updates to one keyed value; writes it to Redis at most every ``refresh_ms``.

    Value, latest event time and the write-due flag share one state: one read and one write
    per update (each is a call into the JVM).
    """

    def __init__(self, config: SharedStageConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.entry = runtime_context.get_state(ValueStateDescriptor("entry", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, update: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        entry = self.entry.value() or [None, 0, False]
        entry[0] = self.apply(entry[0], update)  # the key is in the update: no call into the JVM for it
        entry[1] = max(entry[1], update.event_time_ms)
        schedule_write(entry, ctx, self.config.refresh_ms)
        self.entry.update(entry)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        entry = self.entry.value()
        if entry is None:
            return
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            entry[2] = False
        yield from self.writes(ctx.get_current_key(), entry, final=timestamp >= END_OF_TIME)
        self.entry.update(entry)

    def apply(self, value: Any, update: Any) -> Any:
        raise NotImplementedError

    def writes(self, key: str, entry: list[Any], final: bool) -> Iterator[Any]:
        """What to send for the key's ``entry`` (may change ``entry[0]``; it is saved after).

        ``final``: the input has ended (the end-of-time timer fired).
        """
        raise NotImplementedError


class ItemParamsOwner(_CoalescedWrites):
    """``keyBy(item_id)``: the item's bias + factors with an update count (version), and its popularity.

    Popularity is the item's decayed count per segment (``online_models.popularity.add_decayed``).
    """

    def apply(self, value: Any, touch: ItemTouch) -> Any:
        item = value or {"params": None, "version": 0, "acks": {}, "popularity": {}, "changed": set()}
        if touch.d_factors is not None:
            params = (ItemParams.from_bytes(item["params"]) if item["params"]
                      else initial_item(self.config.mf, touch.item_id))
            factors = params.factors + np.frombuffer(touch.d_factors, dtype="<f8")
            item["params"] = ItemParams(params.bias + touch.d_bias, factors).to_bytes()
            item["version"] += 1
            # The last update received from each sender: one channel per sender, so they arrive in order.
            item["acks"][touch.sender] = touch.seq
        if touch.weight > 0:
            segments = (ALL, touch.segment) if touch.segment and touch.segment != ALL else (ALL,)
            half_life = self.config.popularity_half_life_ms
            for segment in segments:
                item["popularity"][segment] = add_decayed(
                    item["popularity"].get(segment), touch.weight, touch.event_time_ms, half_life)
                item["changed"].add(segment)
        return item

    def writes(self, key: str, entry: list[Any], final: bool) -> Iterator[Any]:
        item, event_time_ms = entry[0], entry[1]
        for segment in sorted(item["changed"]):
            landmark, count = item["popularity"][segment]
            yield message(TO_POPULARITY, segment, PopularityCount(segment, key, landmark, count, event_time_ms))
        item["changed"] = set()
        if not item["params"]:
            return
        params = ItemParams.from_bytes(item["params"])
        payload = {"bias": params.bias, "factors": params.factors, "version": item["version"]}
        yield self.config.redis_write(self.config.keys.item_params(key), event_time_ms, payload, key)
        if final:  # no event left to use it; and Kafka refuses the end-of-time timestamp it would carry
            return
        snapshot = ItemSnapshot(key, item["version"], time.time_ns() // 1_000_000, item["params"], item["acks"])
        yield raw_message(ITEM_SNAPSHOT, snapshot.to_bytes())  # for the user side's replicas


class BanditArms(_CoalescedWrites):
    """``keyBy(scope key)``: one bandit per scope (global, segment:<s>, user:<u>); a user's is erased with the user."""

    def process_element(self, update: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if not isinstance(update, ForgetScope):
            return super().process_element(update, ctx)
        self.entry.clear()  # a due write timer then finds nothing to write
        key = self.config.keys.bandit(self.config.bandit_policy, update.scope_key)
        return iter([to_redis(DeleteKeys((key,), update.event_time_ms, update.scope_key), self.config.redis_shards)])

    def apply(self, value: Any, update: BanditFeedback) -> Any:
        bandit = value if value is not None else make_bandit(self.config.bandit_policy)
        bandit.update(update.arm, update.reward)
        return bandit  # pickles through Learner.__reduce__: the bandit's own versioned bytes

    def writes(self, key: str, entry: list[Any], final: bool) -> Iterator[Row]:
        bandit = entry[0]
        payload = {
            "policy": self.config.bandit_policy,
            "scope": key,
            "stat_names": list(bandit.STAT_NAMES),
            "arms": {arm: list(stats) for arm, stats in bandit.arm_table().items()},
            "hyperparameters": _bandit_hyper(bandit),
        }
        redis_key = self.config.keys.bandit(self.config.bandit_policy, key)
        yield self.config.redis_write(redis_key, entry[1], payload, key)


class SegmentPopularity(KeyedProcessFunction):
    """``keyBy(segment)``: the segment's items ranked by decayed count; writes the top-n.

    The counts come from the item owners (one :class:`PopularityCount` per item and refresh,
    replacing the item's previous one) and live per item in ``MapState``.
    """

    def __init__(self, config: SharedStageConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.counts = runtime_context.get_map_state(
            MapStateDescriptor("item-counts", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        #: ``[unused, latest event time, write due]``: the shape ``schedule_write`` takes.
        self.meta = runtime_context.get_state(ValueStateDescriptor("meta", Types.PICKLED_BYTE_ARRAY()))

    def process_element(self, count: PopularityCount, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        self.counts.put(count.item_id, (count.landmark_ms, count.count))
        meta = self.meta.value() or [None, 0, False]
        if count.event_time_ms > meta[1] or not meta[2]:  # else nothing to save: one state call less
            meta[1] = max(meta[1], count.event_time_ms)
            schedule_write(meta, ctx, self.config.popularity_refresh_ms)
            self.meta.update(meta)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        meta = self.meta.value()
        if meta is None:
            return
        at_ms = meta[1]
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            meta[2] = False
            self.meta.update(meta)
        half_life = self.config.popularity_half_life_ms
        decayed = ((item, decayed_value(count, at_ms, half_life)) for item, count in self.counts.items())
        best = heapq.nlargest(self.config.popularity_top_n, decayed, key=lambda kv: (kv[1], kv[0]))
        segment = ctx.get_current_key()
        payload = {"segment": segment, "items": [[item, count] for item, count in best],
                   "at_ms": at_ms, "half_life_ms": half_life}
        yield self.config.redis_write(self.config.keys.popularity(segment), at_ms, payload, segment)


class ModelMetadata(_CoalescedWrites):
    """``keyBy(model name)``: events learned, running prequential RMSE/MAE, reward join counts."""

    def apply(self, value: Any, update: ModelProgress) -> Any:
        totals = value or {"learned": 0, "se": 0.0, "ae": 0.0, "matched": 0, "unmatched": 0, "late": 0}
        totals["learned"] += update.learned
        totals["se"] += update.squared_error
        totals["ae"] += update.absolute_error
        totals["matched"] += update.rewards_matched
        totals["unmatched"] += update.rewards_unmatched
        totals["late"] += update.late_events
        return totals

    def writes(self, key: str, entry: list[Any], final: bool) -> Iterator[Row]:
        value, event_time_ms = entry[0], entry[1]
        n = value["learned"]
        payload = {
            "model": key,
            "model_version": self.config.model_version,
            "events_learned": n,
            "rmse": math.sqrt(value["se"] / n) if n else None,
            "mae": value["ae"] / n if n else None,
            "rewards_matched": value["matched"],
            "rewards_unmatched": value["unmatched"],
            "late_events": value["late"],
            "n_factors": self.config.mf.n_factors,
        }
        yield self.config.redis_write(self.config.keys.model(key), event_time_ms, payload, key)


def _bandit_hyper(bandit: Any) -> dict[str, float]:
    names = ("prior_alpha", "prior_beta", "c", "epsilon", "decay")
    return {name: float(getattr(bandit, name)) for name in names if hasattr(bandit, name)}
