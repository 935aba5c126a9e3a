"""Prequential ranking evaluation: metrics worked out by hand, the job's exclusions, the baselines."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import pytest

from online_models.implicit import ImplicitMF
from online_models.mf import OwnerSplitMF
from online_models.planted import PlantedConfig, planted_stream
from online_models.rankers import CooccurrenceRanker, FactorRanker, PopularityRanker
from online_models.ranking import Candidates, evaluate_ranking, session_futures
from schemas.events import Event, EventType, ItemId, UserId


class Fixed:
    """A ranker with fixed scores a > b > c > d that learns nothing."""

    keys: ClassVar[list[str]] = ["a", "b", "c", "d"]

    def candidates(self, user: UserId, session_items: Sequence[ItemId]) -> Candidates:
        return Candidates({k: r for r, k in enumerate(self.keys)}, self.keys, np.array([4.0, 3.0, 2.0, 1.0]))

    def learn_event(self, event: Event) -> bool:
        return False


def click(n: int, user: str, item: str, t: int, kind: EventType = EventType.CLICK) -> Event:
    return Event(f"e{n}", kind, user, t, item_id=item)


def test_ranks_skip_the_sessions_seen_items_and_score_by_hand() -> None:
    # u1's session: c (rank 3), then a (seen: none of a; c is seen, so a is rank 1), then c again (a repeat).
    # u2: d (rank 4), 2 hours later (a new session) b (rank 2).
    events = [click(0, "u1", "c", 0), click(1, "u1", "a", 1_000), click(2, "u1", "c", 2_000),
              click(3, "u2", "d", 0), click(4, "u2", "b", 7_200_000)]  # fmt: skip
    events.sort(key=lambda e: e.event_time_ms)
    r = evaluate_ranking(events, {"fixed": Fixed()}, k=3)["fixed"]
    assert (r.n, r.repeats, r.hits, r.misses_unknown) == (4, 1, 3, 0)  # c@3, a@1, d@4 (miss), b@2
    assert r.ndcg == pytest.approx((1 / math.log2(4) + 1 + 1 / math.log2(3)) / 4)
    # recall: u1 at c: future {c, a}, top-3 {a, b, c} -> 1; at a: future {a, c} minus seen {c} -> 1;
    # u2 at d: future {d}, top {a, b, c} -> 0; at b: {b} -> 1.
    assert r.recall == pytest.approx(3 / 4)
    assert r.coverage == pytest.approx(1.0)  # d enters u1's top 3 once a and c are seen
    assert r.events == 5 and r.us_per_event > 0


def test_impressions_do_not_make_an_item_seen_and_unknown_items_miss() -> None:
    events = [Event("i", EventType.IMPRESSION, "u", 0, item_id="x"), click(1, "u", "x", 1)]
    pop = evaluate_ranking(events, {"pop": PopularityRanker()}, k=10)["pop"]
    assert (pop.n, pop.repeats, pop.misses_unknown, pop.hits) == (1, 0, 1, 0)
    bpr = evaluate_ranking(events, {"bpr": FactorRanker(ImplicitMF())}, k=10)["bpr"]
    assert (bpr.n, bpr.misses_unknown, bpr.hits) == (1, 0, 1)  # the impression made x known


def test_session_futures_break_at_the_gap_and_ignore_other_types() -> None:
    events = [click(0, "u", "a", 0), Event("v", EventType.IMPRESSION, "u", 1, item_id="z"),
              click(2, "u", "b", 2), click(3, "u", "c", 2 + 30 * 60_000)]  # fmt: skip
    futures = session_futures(events, frozenset({EventType.CLICK}))
    assert futures == {0: {"a", "b"}, 2: {"b"}, 3: {"c"}}


def test_cooccurrence_scores_items_of_the_same_sessions() -> None:
    co = CooccurrenceRanker()
    for n, (user, item) in enumerate([("a", "x"), ("a", "y"), ("a", "z"), ("b", "x"), ("b", "y")]):
        co.learn_event(click(n, user, item, n))
    found = co.candidates("c", ["x"])
    scores = {item: found.scores[row] for item, row in found.rows.items()}
    assert scores["y"] > scores["z"] > scores["x"]  # y twice with x, z once, x never with itself


def test_popularity_decays_older_counts() -> None:
    pop = PopularityRanker(half_life_ms=1_000)
    pop.learn_event(click(0, "u", "old", 0, EventType.PURCHASE))  # weight 4, 3 half-lives ago: 0.5
    pop.learn_event(click(1, "u", "new", 3_000))  # weight 2, now
    found = pop.candidates("u", [])
    assert found.scores[found.rows["new"]] == pytest.approx(4 * found.scores[found.rows["old"]])


def test_bpr_beats_explicit_mf_and_popularity_on_planted_taste() -> None:
    events = planted_stream(PlantedConfig(n_users=200, n_items=300, n_clicks=6_000, seed=2))
    rankers = {"pop": PopularityRanker(), "mf": FactorRanker(OwnerSplitMF()),
               "bpr": FactorRanker(ImplicitMF())}  # fmt: skip
    r = evaluate_ranking(events, rankers, k=10)
    assert r["bpr"].hit_rate > 1.2 * r["pop"].hit_rate
    assert r["bpr"].hit_rate > 2 * r["mf"].hit_rate
