"""The shared stages' logic without Flink: item owner acks and popularity, bandits, model totals, ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

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
from flink_jobs.shared_steps import LIST_AGAIN_MS, BanditArms, Coalesced, ItemOwner, ModelTotals, segment_ranking
from online_models.mf import ItemParams, MFConfig
from schemas.redis_keys import RedisKeys

KEYS = RedisKeys("t")
HOUR = 3_600_000


def touch(seq: int, sender: int = 0, segment: str | None = "de", learned: bool = True) -> ItemTouch:
    d = np.full(2, 0.5).astype("<f8").tobytes() if learned else None
    return ItemTouch("i1", seq * 1000, 1.0, segment, 0.25 if learned else 0.0, d, sender, seq)


def test_the_item_owner_applies_updates_and_acknowledges_each_sender() -> None:
    owner = ItemOwner(MFConfig(n_factors=2), KEYS, popularity_half_life_ms=HOUR)
    item = None
    for seq, sender in [(1, 0), (2, 0), (1, 1)]:
        item = owner.apply(item, touch(seq, sender))
    assert item is not None and item["version"] == 3 and item["acks"] == {0: 2, 1: 1}
    assert item["changed"] == {"*", "de"}
    outputs = list(owner.writes("i1", Coalesced(item, 3000, True), final=False))
    assert [type(o) for o in outputs] == [PopularityCount, PopularityCount, RedisWrite, RedisWrite, ItemSnapshot]
    # The item's record, and its id in the set serving reads the items by (with the first write).
    record, learned = outputs[2:4]
    assert (record.key, learned.key, learned.payload) == ("t:item:{i1}", "t:{items}:learned", SetMember("i1"))
    assert item["listed_ms"] > 0
    snap = outputs[-1]
    assert (snap.version, snap.acks) == (3, {0: 2, 1: 1})
    assert ItemParams.from_bytes(snap.params).bias == pytest.approx(item["params"].bias)
    stored = owner.value_to_state(item)  # in keyed state the parameters are bytes
    assert ItemParams.from_bytes(stored["params"]).bias == pytest.approx(item["params"].bias)
    assert owner.value_from_state(stored)["params"].bias == pytest.approx(item["params"].bias)
    assert item["changed"] == set()  # counts are sent once per change
    final = list(owner.writes("i1", Coalesced(item, 3000, False), final=True))
    assert [type(o) for o in final] == [RedisWrite]  # listed already; no snapshot once the input has ended
    item["listed_ms"] -= LIST_AGAIN_MS  # long ago: listed again (a set Redis lost fills again)
    assert [o.key for o in owner.writes("i1", Coalesced(item, 3000, False), final=True)] == [
        "t:item:{i1}", "t:{items}:learned"]


def test_a_touch_that_was_not_learned_counts_popularity_only() -> None:
    owner = ItemOwner(MFConfig(n_factors=2), KEYS, popularity_half_life_ms=HOUR)
    item = owner.apply(None, touch(1, learned=False, segment=None))
    assert item["params"] is None and item["version"] == 0 and item["changed"] == {"*"}
    assert [type(o) for o in owner.writes("i1", Coalesced(item, 1000, True), final=False)] == [PopularityCount]


def test_bandit_and_model_totals() -> None:
    arms = BanditArms("ts", KEYS)
    bandit = arms.apply(None, BanditFeedback("global", "a", 1.0, 5))
    bandit = arms.apply(bandit, BanditFeedback("global", "b", 0.0, 6))
    (write,) = arms.writes("global", Coalesced(bandit, 6, True), final=False)
    assert write.key == KEYS.bandit("ts", "global") and set(write.payload["arms"]) == {"a", "b"}
    model = ModelTotals("v9", 2, KEYS)
    totals = model.apply(None, ModelProgress(2, 2.0, 2.0, 1, 1, 3, 7))
    totals = model.apply(totals, ModelProgress(2, 6.0, 2.0, 0, 0, 0, 8))
    (write,) = model.writes("mf", Coalesced(totals, 8, True), final=False)
    assert write.payload["events_learned"] == 4 and write.payload["rmse"] == pytest.approx(math.sqrt(2.0))
    payload = write.payload
    assert (payload["rewards_matched"], payload["late_events"], payload["model_version"]) == (1, 3, "v9")


def test_dead_letters_are_counted_by_reason_for_the_console() -> None:
    model = ModelTotals("v9", 2, KEYS)
    counts = model.apply(None, DeadLetterCounts({"bad_avro": 2}, 10))
    counts = model.apply(counts, DeadLetterCounts({"missing_field": 1, "bad_avro": 1}, 11))
    (write,) = model.writes("dlq", Coalesced(counts, 11, True), final=False)
    assert write.key == KEYS.model("dlq")
    assert write.payload == {"by_reason": {"bad_avro": 3, "missing_field": 1}, "total": 4}


def test_the_segment_ranking_decays_to_one_time() -> None:
    counts = [("old", (0, 4.0)), ("new", (HOUR, 3.0))]  # old: 4 an hour ago -> 2 now
    ranking = segment_ranking("*", counts, HOUR, top_n=5, half_life_ms=HOUR)
    assert [item for item, _ in ranking["items"]] == ["new", "old"]


def test_coalesced_round_trips_through_the_state_list() -> None:
    assert Coalesced.from_state(None) == Coalesced()
    assert Coalesced.from_state(["v", 3, True]).to_state() == ["v", 3, True]


def test_merged_touches_give_the_owner_what_the_touches_one_by_one_gave() -> None:
    owner = ItemOwner(MFConfig(n_factors=2), KEYS, popularity_half_life_ms=HOUR)
    touches = [touch(1), touch(2, learned=False, segment=None), touch(3, segment="fr"), touch(1, sender=1)]
    one_by_one = None
    for t in touches:
        one_by_one = owner.apply(one_by_one, t)
    merged = None
    for batch in ItemTouches.merge(touches[:3]), ItemTouches.merge(touches[3:]):
        (message,) = batch
        merged = owner.apply(merged, message)
    assert one_by_one is not None and merged is not None
    assert merged["version"] == one_by_one["version"] == 3
    assert merged["acks"] == one_by_one["acks"] == {0: 3, 1: 1}
    assert merged["params"].bias == pytest.approx(one_by_one["params"].bias)
    assert np.allclose(merged["params"].factors, one_by_one["params"].factors)
    assert merged["popularity"] == one_by_one["popularity"]  # hits applied one by one, in order
    assert merged["changed"] == one_by_one["changed"] == {"*", "de", "fr"}
