"""Co-visitation counts (online_models/covisit.py): the rules alone, then on the OTTO sample against brute force."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest

from bench import covisit_otto as bench
from online_models.covisit import OTTO_WEIGHTS, CoVisitation


def test_a_pair_counts_once_per_session_at_its_best_weight_both_ways() -> None:
    covisit = CoVisitation()
    for item, weight in [("a", 1.0), ("b", 1.0), ("a", 1.0), ("b", 6.0), ("a", 3.0)]:
        covisit.learn_one("s1", item, 0, weight)
    assert covisit.similar("a", 5) == [("b", 6.0)] and covisit.similar("b", 5) == [("a", 6.0)]
    covisit.learn_one("s2", "a", 0)
    covisit.learn_one("s2", "b", 0)
    assert covisit.similar("a", 5) == [("b", 7.0)] and covisit.n_pairs == 1


def test_window_recent_items_and_closed_sessions() -> None:
    covisit = CoVisitation(window_ms=100, max_recent=2)
    covisit.learn_one("s", "a", 0)
    covisit.learn_one("s", "b", 50)
    covisit.learn_one("s", "c", 120)  # a is 120 ms away: outside the window; b pairs
    assert covisit.similar("c", 5) == [("b", 1.0)]
    covisit.learn_one("s", "d", 130)  # only the last 2 distinct items are kept: a went when c came
    assert covisit.similar("d", 5) == [("b", 1.0), ("c", 1.0)]
    covisit.learn_one("s", "c", 140)  # a revisit refreshes c: b is the oldest and goes when e comes
    covisit.learn_one("s", "e", 150)
    covisit.learn_one("s", "f", 160)
    assert [other for other, _ in covisit.similar("e", 5)] == ["c", "d", "f"]
    assert [other for other, _ in covisit.similar("f", 5)] == ["c", "e"]
    covisit.end_session("s")
    covisit.learn_one("s", "g", 170)  # a new session of the same id starts empty
    assert covisit.similar("g", 5) == []


def test_late_visits_pair_too_and_closeness_halves() -> None:
    covisit = CoVisitation(window_ms=10_000, gap_half_life_ms=1_000)
    covisit.learn_one("s", "a", 5_000)
    covisit.learn_one("s", "b", 3_000)  # late, 2 s before a
    assert covisit.similar("a", 5) == [("b", 0.25)]
    with pytest.raises(ValueError, match="max_recent"):
        CoVisitation(max_recent=0)


def test_similar_ranks_by_count_then_id_and_filters() -> None:
    covisit = CoVisitation()
    for session, items in enumerate([["x", "b", "c"], ["x", "c"], ["x", "a"]]):
        for item in items:
            covisit.learn_one(str(session), item, 0)
    assert covisit.similar("x", 3) == [("c", 2.0), ("a", 1.0), ("b", 1.0)]
    assert covisit.similar("x", 1, allows=lambda item: item != "c") == [("a", 1.0)]
    assert covisit.similar("x", 0) == [] and covisit.similar("nobody", 3) == []


def test_otto_sample_lists_match_a_brute_force_count_and_beat_random_items(shared_data: Path) -> None:
    sessions = bench.read_otto(shared_data / "otto" / "sample.jsonl")
    assert len(sessions) >= 10
    window, half_life = bench.WINDOW_MS, bench.GAP_HALF_LIFE_MS
    # Brute force: per session, each pair's best weight x closeness over every two visits within the window.
    expected: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for session in sessions:
        best: dict[tuple[str, str], float] = {}
        for j, later in enumerate(session):
            for earlier in session[:j]:
                gap = later.ts - earlier.ts
                if earlier.aid != later.aid and gap <= window:
                    pair = tuple(sorted((earlier.aid, later.aid)))
                    worth = OTTO_WEIGHTS[later.type] * 0.5 ** (gap / half_life)
                    best[pair] = max(best.get(pair, 0.0), worth)  # type: ignore[index]
        for (a, b), worth in best.items():
            expected[a][b] += worth
            expected[b][a] += worth
    # Every distinct item kept per session, so the learner must agree with the brute force exactly.
    everything = CoVisitation(window_ms=window, max_recent=10_000, gap_half_life_ms=half_life)
    for n, session in enumerate(sessions):
        for visit in session:
            everything.learn_one(str(n), visit.aid, visit.ts, OTTO_WEIGHTS[visit.type])
    items = sorted({visit.aid for session in sessions for visit in session})
    for item in items:
        got = dict(everything.similar(item, len(items)))
        assert got.keys() == expected[item].keys(), item
        assert all(got[other] == pytest.approx(count) for other, count in expected[item].items()), item

    # The served setting (30 recent items per session): the most visited items' lists are non-empty and
    # their top partners were co-visited with them far more than random items were.
    covisit = bench.learn(sessions)
    rng = random.Random(3)
    for item, visits in bench.most_visited(sessions, 3):
        top = covisit.similar(item, 5)
        print(f"item {item} ({visits} events) also visited: " + ", ".join(f"{o} ({n:.2f})" for o, n in top))
        assert len(top) == 5 and all(count > 0 and expected[item][other] > 0 for other, count in top)
        others = rng.sample([other for other in items if other != item], 50)
        random_mean = sum(expected[item].get(other, 0.0) for other in others) / len(others)
        assert sum(expected[item][other] for other, _ in top) / len(top) > 3 * random_mean
