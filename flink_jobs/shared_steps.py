"""What the shared stages do with their state, as pure steps (``flink_jobs/shared_state.py`` is the adapter).

Each shared stage keeps one value per key (an item's parameters and popularity, a scope's
bandit, the model's totals) together with the latest event time and whether a write is due
(:class:`Coalesced`). ``apply(value, update) -> value`` folds in what the user stage sent;
``writes(key, entry, final) -> messages`` says what the key's refresh timer sends (Redis writes,
popularity counts, item snapshots); the adapter routes them.

>>> from flink_jobs.messages import ModelProgress
>>> from schemas.redis_keys import RedisKeys
>>> model = ModelTotals(model_version="mf-v1", n_factors=10, keys=RedisKeys("pulse"))
>>> totals = model.apply(None, ModelProgress(4, 1.0, 2.0, 1, 0, 0, 99))
>>> [write.payload["rmse"] for write in model.writes("mf", Coalesced(totals, 99, True), final=False)]
[0.5]
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from flink_jobs.attribution import ExperimentTally
from flink_jobs.messages import (
    BanditFeedback,
    DeadLetterCounts,
    ItemSnapshot,
    ItemTouch,
    ItemTouches,
    ModelProgress,
    PopularityCount,
    RedisWrite,
    SetMember,
)
from online_models.bandits import LinUCB, make_bandit
from online_models.drift import DriftAlarm
from online_models.mf import ItemParams, MFConfig, initial_item
from online_models.popularity import ALL, DecayedCount, add_decayed, decayed_value
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CompactValue, encode_item_value

#: How often an item written again is added again to the set of learned items (``RedisKeys.learned_items``).
LIST_AGAIN_MS = 10 * 60 * 1000


@dataclass
class Coalesced:
    """A shared key's state: its value, the latest event time applied, and whether a write is due.

    In keyed state it is the list ``[value, latest event time, write due]`` (one state read and
    one write per update).
    """

    value: Any = None
    event_time_ms: int = 0
    due: bool = False

    @classmethod
    def from_state(cls, state: list[Any] | None, value_from_state: Any = None) -> Coalesced:
        """From keyed state (``None``: nothing yet); ``value_from_state`` turns the stored value into the live one."""
        if state is None:
            return cls()
        value, event_time_ms, due = state
        if value_from_state is not None and value is not None:
            value = value_from_state(value)
        return cls(value, event_time_ms, due)

    def to_state(self, value_to_state: Any = None) -> list[Any]:
        """The list keyed state holds."""
        value = self.value if value_to_state is None or self.value is None else value_to_state(self.value)
        return [value, self.event_time_ms, self.due]


class SharedSteps:
    """What every shared stage's steps have: the value in memory is the value in state, unless overridden."""

    def value_from_state(self, value: Any) -> Any:
        return value

    def value_to_state(self, value: Any) -> Any:
        return value


@dataclass(frozen=True)
class ItemOwner(SharedSteps):
    """``keyBy(item_id)``: the item's bias + factors with an update count (version), and its popularity.

    Popularity is the item's decayed count per segment (``online_models.popularity.add_decayed``).
    In memory the parameters are an :class:`ItemParams`; in keyed state, its bytes.
    """

    def value_from_state(self, value: dict[str, Any]) -> dict[str, Any]:
        params = value["params"]
        return {**value, "params": ItemParams.from_bytes(params) if params else None}

    def value_to_state(self, value: dict[str, Any]) -> dict[str, Any]:
        params = value["params"]
        return {**value, "params": None if params is None else params.to_bytes()}

    mf: MFConfig
    keys: RedisKeys
    popularity_half_life_ms: int
    value_format: str = "compact"  # "legacy": format-1 hashes (schemas.redis_keys)

    def apply(self, value: dict[str, Any] | None, touch: ItemTouch | ItemTouches) -> dict[str, Any]:
        item = value or {"params": None, "version": 0, "acks": {}, "popularity": {}, "changed": set()}
        if isinstance(touch, ItemTouch):  # one event's touch (sent by jobs before per-batch merging)
            touch = ItemTouches.merge([touch])[0]
        if touch.d_factors is not None:
            params = item["params"] if item["params"] is not None else initial_item(self.mf, touch.item_id)
            factors = params.factors + np.frombuffer(touch.d_factors, dtype="<f8")
            item["params"] = ItemParams(params.bias + touch.d_bias, factors)
            item["version"] += touch.updates
            # The last update received from each sender: one channel per sender, so they arrive in order.
            item["acks"][touch.sender] = touch.seq
        for weight, segment, event_time_ms in touch.hits:
            segments = (ALL, segment) if segment and segment != ALL else (ALL,)
            for name in segments:
                item["popularity"][name] = add_decayed(
                    item["popularity"].get(name), weight, event_time_ms, self.popularity_half_life_ms)
                item["changed"].add(name)
        return item

    def writes(self, key: str, entry: Coalesced, final: bool) -> Iterator[Any]:
        """Changed popularity counts, the item's Redis key and (unless ``final``) a snapshot for the replicas.

        Resets the item's changed segments (the caller saves ``entry``).
        """
        item, event_time_ms = entry.value, entry.event_time_ms
        for segment in sorted(item["changed"]):
            landmark, count = item["popularity"][segment]
            yield PopularityCount(segment, key, landmark, count, event_time_ms)
        item["changed"] = set()
        if item["params"] is None:
            return
        params = item["params"]
        payload = {"bias": params.bias, "factors": params.factors, "version": item["version"]}
        if self.value_format == "legacy":
            yield RedisWrite(self.keys.item_params(key), event_time_ms, payload, key)
        else:
            yield RedisWrite(self.keys.item_record(key), event_time_ms, CompactValue(encode_item_value(payload)), key)
        now_ms = time.time_ns() // 1_000_000
        if now_ms - item.get("listed_ms", 0) >= LIST_AGAIN_MS:
            # In the set serving reads items by: with the first write, then again now and then, so a
            # set Redis lost fills again. A message of its own: a later write of the item replaces
            # the record's message in the sink, never this one.
            item["listed_ms"] = now_ms
            yield RedisWrite(self.keys.learned_items(), event_time_ms, SetMember(key), key)
        if final:  # no event left to use it; and Kafka refuses the end-of-time timestamp it would carry
            return
        yield ItemSnapshot(key, item["version"], time.time_ns() // 1_000_000, params.to_bytes(), dict(item["acks"]))


@dataclass(frozen=True)
class BanditArms(SharedSteps):
    """``keyBy(scope key)``: one bandit per scope (global, segment:<s>, user:<u>).

    ``hyperparameters``: the policy's (LinUCB: ``alpha``, ``features``), as ``(name, value)`` pairs.
    A LinUCB learns each feedback with its impression's context; its table is
    :meth:`online_models.bandits.LinUCB.table_payload` (the state serving decides from).
    """

    policy: str
    keys: RedisKeys
    hyperparameters: tuple[tuple[str, Any], ...] = ()

    def apply(self, value: Any, update: BanditFeedback) -> Any:
        bandit = value if value is not None else make_bandit(self.policy, **dict(self.hyperparameters))
        bandit.update(update.arm, update.reward, dict(update.context) if update.context else None, update.count)
        return bandit  # pickles through Learner.__reduce__: the bandit's own versioned bytes

    def writes(self, key: str, entry: Coalesced, final: bool) -> Iterator[RedisWrite]:
        bandit = entry.value
        payload: dict[str, Any] = {"policy": self.policy, "scope": key}
        if isinstance(bandit, LinUCB):
            payload.update(bandit.table_payload())
        else:
            payload.update({
                "stat_names": list(bandit.STAT_NAMES),
                "arms": {arm: list(stats) for arm, stats in bandit.arm_table().items()},
                "hyperparameters": bandit_hyperparameters(bandit),
            })
        yield RedisWrite(self.keys.bandit(self.policy, key), entry.event_time_ms, payload, key)


@dataclass(frozen=True)
class ModelTotals(SharedSteps):
    """``keyBy(model name)``: events learned, running prequential RMSE/MAE or HitRate@k, reward join counts.

    ``learner``: ``explicit`` (rating errors: RMSE, MAE) or an implicit one (``bpr``, ``wmf``: the
    share of judged positives whose item was in the top ``ranking_k`` before it was learned).
    """

    model_version: str
    n_factors: int
    keys: RedisKeys
    learner: str = "explicit"
    ranking_k: int = 10

    def apply(self, value: dict[str, Any] | None,
              update: ModelProgress | DeadLetterCounts | DriftAlarm) -> dict[str, Any]:
        if isinstance(update, DeadLetterCounts):  # the "dlq" key: lifetime dead letters by reason
            counts = value or {"by_reason": {}}
            for reason, n in update.by_reason.items():
                counts["by_reason"][reason] = counts["by_reason"].get(reason, 0) + n
            return counts
        totals = value or {"learned": 0, "se": 0.0, "ae": 0.0, "matched": 0, "unmatched": 0, "late": 0}
        if isinstance(update, DriftAlarm):  # a detector of one user-stage subtask alarmed
            alarms = totals.setdefault("drift_alarms", {})
            alarms[update.signal] = alarms.get(update.signal, 0) + 1
            totals["last_drift_ms"] = max(totals.get("last_drift_ms") or 0, update.time_ms)
            totals["last_drift"] = update.signal
            return totals
        totals["learned"] += update.learned
        totals["se"] += update.squared_error
        totals["ae"] += update.absolute_error
        totals["matched"] += update.rewards_matched
        totals["unmatched"] += update.rewards_unmatched
        totals["late"] += update.late_events
        if update.judged:
            totals["judged"] = totals.get("judged", 0) + update.judged
            totals["hits"] = totals.get("hits", 0) + update.hits
        return totals

    def writes(self, key: str, entry: Coalesced, final: bool) -> Iterator[RedisWrite]:
        if "by_reason" in entry.value:
            by_reason = dict(sorted(entry.value["by_reason"].items()))
            payload = {"by_reason": by_reason, "total": sum(by_reason.values())}
            yield RedisWrite(self.keys.model(key), entry.event_time_ms, payload, key)
            return
        totals, n = entry.value, entry.value["learned"]
        explicit, judged = self.learner == "explicit", totals.get("judged", 0)
        payload = {
            "model": key,
            "model_version": self.model_version,
            "learner": self.learner,
            "events_learned": n,
            "rmse": math.sqrt(totals["se"] / n) if n and explicit else None,
            "mae": totals["ae"] / n if n and explicit else None,
            **({} if explicit else {"ranking_k": self.ranking_k, "judged": judged,
                                    "hit_rate": totals.get("hits", 0) / judged if judged else None}),
            "rewards_matched": totals["matched"],
            "rewards_unmatched": totals["unmatched"],
            "late_events": totals["late"],
            "n_factors": self.n_factors,
            "drift_alarms": dict(sorted(totals.get("drift_alarms", {}).items())),
            "last_drift_ms": totals.get("last_drift_ms"),
            "last_drift": totals.get("last_drift"),
        }
        yield RedisWrite(self.keys.model(key), entry.event_time_ms, payload, key)


@dataclass(frozen=True)
class ExperimentTotals(SharedSteps):
    """``keyBy(experiment)``: exposures and credited outcomes by variant (:mod:`flink_jobs.attribution`)."""

    keys: RedisKeys
    window_ms: int

    def apply(self, value: dict[str, Any] | None, tally: ExperimentTally) -> dict[str, Any]:
        variants = value or {}
        counts = variants.setdefault(tally.variant, dict.fromkeys(tally.counts(), 0))
        for name, n in tally.counts().items():
            counts[name] += n
        return variants

    def writes(self, key: str, entry: Coalesced, final: bool) -> Iterator[RedisWrite]:
        payload = {"experiment": key, "variants": dict(sorted(entry.value.items())), "window_ms": self.window_ms}
        yield RedisWrite(self.keys.experiment(key), entry.event_time_ms, payload, key)


def segment_ranking(
    segment: str, counts: Iterable[tuple[str, DecayedCount]], at_ms: int, *, top_n: int, half_life_ms: int
) -> dict[str, Any]:
    """A segment's ``top_n`` items by decayed count as of ``at_ms``, as its popularity key holds them.

    >>> segment_ranking("*", [("a", (0, 1.0)), ("b", (0, 3.0)), ("c", (0, 3.0))], 0, top_n=2, half_life_ms=1000)
    {'segment': '*', 'items': [['c', 3.0], ['b', 3.0]], 'at_ms': 0, 'half_life_ms': 1000}
    """
    decayed = ((item, decayed_value(count, at_ms, half_life_ms)) for item, count in counts)
    best = heapq.nlargest(top_n, decayed, key=lambda kv: (kv[1], kv[0]))
    return {"segment": segment, "items": [[item, count] for item, count in best],
            "at_ms": at_ms, "half_life_ms": half_life_ms}


def bandit_hyperparameters(bandit: Any) -> dict[str, float]:
    """The bandit's hyperparameters the arm key shows serving."""
    names = ("prior_alpha", "prior_beta", "c", "epsilon", "decay")
    return {name: float(getattr(bandit, name)) for name in names if hasattr(bandit, name)}
