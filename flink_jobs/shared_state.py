"""Stages that own state shared by many users: item parameters, bandit arms, popularity, model metadata.

Each is keyed by what owns the state (item id, bandit scope, segment, model name), applies
what the user stage sends, and writes its Redis key at most every ``refresh_ms`` (a
processing-time timer), plus once more when the input ends (an event-time timer at the end
of time fires when the final watermark arrives).
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, OutputTag, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor, ValueStateDescriptor

from flink_jobs.messages import (
    BanditFeedback,
    DeleteKeys,
    ForgetScope,
    ItemDelta,
    ItemSnapshot,
    ModelProgress,
    PopularityHit,
    RedisWrite,
)
from online_models.bandits import make_bandit
from online_models.mf import ItemParams, MFConfig, initial_item
from online_models.popularity import decay_factor, forward_weight
from schemas.redis_keys import RedisKeys

END_OF_TIME = 2**63 - 2  # fires on the final watermark (Long.MAX_VALUE) of a bounded input

#: Item-parameter snapshots (bytes of :class:`ItemSnapshot`) for the user side's replicas.
ITEM_SNAPSHOTS = OutputTag("item-snapshots", Types.PRIMITIVE_ARRAY(Types.BYTE()))


@dataclass(frozen=True)
class SharedStageConfig:
    """What these stages need from the settings."""

    keys: RedisKeys
    mf: MFConfig
    bandit_policy: str
    refresh_ms: int
    popularity_top_n: int = 100
    model_name: str = "mf"
    model_version: str = "mf-v1"


def schedule_write(due: Any, ctx: KeyedProcessFunction.Context, refresh_ms: int) -> None:
    """Unless a write is already due for this key: one in ``refresh_ms``, and one at the end of input."""
    if due.value():
        return
    due.update(True)
    timers = ctx.timer_service()
    timers.register_processing_time_timer(timers.current_processing_time() + refresh_ms)
    timers.register_event_time_timer(END_OF_TIME)


class _CoalescedWrites(KeyedProcessFunction):
    """Applies updates to one keyed value; writes it to Redis at most every ``refresh_ms``."""

    def __init__(self, config: SharedStageConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.value = runtime_context.get_state(ValueStateDescriptor("value", Types.PICKLED_BYTE_ARRAY()))
        self.due = runtime_context.get_state(ValueStateDescriptor("due", Types.BOOLEAN()))
        self.latest = runtime_context.get_state(ValueStateDescriptor("latest", Types.LONG()))

    def process_element(self, update: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        self.value.update(self.apply(ctx.get_current_key(), self.value.value(), update))
        self.latest.update(max(self.latest.value() or 0, update.event_time_ms))
        schedule_write(self.due, ctx, self.config.refresh_ms)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.due.clear()
        value = self.value.value()
        if value is not None:
            yield from self.writes(ctx.get_current_key(), value, self.latest.value() or 0)

    def apply(self, key: str, value: Any, update: Any) -> Any:
        raise NotImplementedError

    def writes(self, key: str, value: Any, event_time_ms: int) -> Iterator[Any]:
        raise NotImplementedError


class ItemParamsOwner(_CoalescedWrites):
    """``keyBy(item_id)``: the authoritative item bias + factors, with an update count (version)."""

    def apply(self, key: str, value: Any, update: ItemDelta) -> Any:
        params_bytes, version, acks = value if value else (None, 0, {})
        params = ItemParams.from_bytes(params_bytes) if params_bytes else initial_item(self.config.mf, key)
        factors = params.factors + np.frombuffer(update.d_factors, dtype="<f8")
        # The last update received from each sender: one channel per sender, so they arrive in order.
        acks = {**acks, update.sender: update.seq}
        return ItemParams(params.bias + update.d_bias, factors).to_bytes(), version + 1, acks

    def writes(self, key: str, value: Any, event_time_ms: int) -> Iterator[Any]:
        params_bytes, version, acks = value
        params = ItemParams.from_bytes(params_bytes)
        payload = {"bias": params.bias, "factors": params.factors, "version": version}
        yield RedisWrite(self.config.keys.item_params(key), event_time_ms, payload, key)
        snapshot = ItemSnapshot(key, version, time.time_ns() // 1_000_000, params_bytes, acks)
        yield ITEM_SNAPSHOTS, snapshot.to_bytes()


class BanditArms(_CoalescedWrites):
    """``keyBy(scope key)``: one bandit per scope (global, segment:<s>, user:<u>); a user's is erased with the user."""

    def process_element(self, update: Any, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        if not isinstance(update, ForgetScope):
            return super().process_element(update, ctx)
        self.value.clear()  # a due write timer then finds nothing to write
        self.latest.clear()
        key = self.config.keys.bandit(self.config.bandit_policy, update.scope_key)
        return iter([DeleteKeys((key,), update.event_time_ms, update.scope_key)])

    def apply(self, key: str, value: Any, update: BanditFeedback) -> Any:
        bandit = value if value is not None else make_bandit(self.config.bandit_policy)
        bandit.update(update.arm, update.reward)
        return bandit  # pickles through Learner.__reduce__: the bandit's own versioned bytes

    def writes(self, key: str, value: Any, event_time_ms: int) -> Iterator[RedisWrite]:
        payload = {
            "policy": self.config.bandit_policy,
            "scope": key,
            "stat_names": list(value.STAT_NAMES),
            "arms": {arm: list(stats) for arm, stats in value.arm_table().items()},
            "hyperparameters": _bandit_hyper(value),
        }
        redis_key = self.config.keys.bandit(self.config.bandit_policy, key)
        yield RedisWrite(redis_key, event_time_ms, payload, key)


class SegmentPopularity(KeyedProcessFunction):
    """``keyBy(segment)``: exponentially decayed interaction counts per item; writes the top-n.

    Counts live per item in ``MapState`` (forward decay against a per-segment landmark), so a
    hit reads and writes one small entry instead of the whole table.
    """

    HALF_LIFE_MS = 24 * 3600 * 1000
    RESCALE_HALF_LIVES = 64  # move the landmark before forward weights grow past float range

    def __init__(self, config: SharedStageConfig) -> None:
        self.config = config

    def open(self, runtime_context: RuntimeContext) -> None:
        self.counts = runtime_context.get_map_state(MapStateDescriptor("counts", Types.STRING(), Types.DOUBLE()))
        self.landmark = runtime_context.get_state(ValueStateDescriptor("landmark", Types.LONG()))
        self.latest = runtime_context.get_state(ValueStateDescriptor("latest", Types.LONG()))
        self.due = runtime_context.get_state(ValueStateDescriptor("due", Types.BOOLEAN()))

    def process_element(self, hit: PopularityHit, ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        landmark = self.landmark.value()
        if landmark is None or hit.event_time_ms - landmark > self.RESCALE_HALF_LIVES * self.HALF_LIFE_MS:
            landmark = self._move_landmark(landmark, hit.event_time_ms)
        added = forward_weight(hit.weight, hit.event_time_ms, landmark, self.HALF_LIFE_MS)
        self.counts.put(hit.item_id, (self.counts.get(hit.item_id) or 0.0) + added)
        self.latest.update(max(self.latest.value() or 0, hit.event_time_ms))
        schedule_write(self.due, ctx, self.config.refresh_ms)
        return iter(())

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext) -> Iterator[Any]:
        if ctx.time_domain() == TimeDomain.PROCESSING_TIME:
            self.due.clear()
        landmark, at_ms = self.landmark.value(), self.latest.value() or 0
        if landmark is None:
            return
        decay = decay_factor(landmark, at_ms, self.HALF_LIFE_MS)
        best = heapq.nlargest(self.config.popularity_top_n, self.counts.items(), key=lambda kv: (kv[1], kv[0]))
        segment = ctx.get_current_key()
        payload = {"segment": segment, "items": [[item, count * decay] for item, count in best],
                   "at_ms": at_ms, "half_life_ms": self.HALF_LIFE_MS}
        yield RedisWrite(self.config.keys.popularity(segment), at_ms, payload, segment)

    def _move_landmark(self, old: int | None, new: int) -> int:
        if old is not None:
            factor = decay_factor(old, new, self.HALF_LIFE_MS)  # old frame -> new frame
            for item, count in list(self.counts.items()):
                self.counts.put(item, count * factor)
        self.landmark.update(new)
        return new


class ModelMetadata(_CoalescedWrites):
    """``keyBy(model name)``: events learned, running prequential RMSE/MAE, reward join counts."""

    def apply(self, key: str, value: Any, update: ModelProgress) -> Any:
        totals = value or {"learned": 0, "se": 0.0, "ae": 0.0, "matched": 0, "unmatched": 0, "late": 0}
        totals["learned"] += update.learned
        totals["se"] += update.squared_error
        totals["ae"] += update.absolute_error
        totals["matched"] += update.rewards_matched
        totals["unmatched"] += update.rewards_unmatched
        totals["late"] += update.late_events
        return totals

    def writes(self, key: str, value: Any, event_time_ms: int) -> Iterator[RedisWrite]:
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
        yield RedisWrite(self.config.keys.model(key), event_time_ms, payload, key)


def _bandit_hyper(bandit: Any) -> dict[str, float]:
    names = ("prior_alpha", "prior_beta", "c", "epsilon", "decay")
    return {name: float(getattr(bandit, name)) for name in names if hasattr(bandit, name)}
