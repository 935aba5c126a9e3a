"""Which new items go where (serving/new_items.py): taste, picks, places, pools, and the whole shaping."""

from __future__ import annotations

import random
from collections import Counter

from serving.catalogue import Catalogue, ItemFilter
from serving.new_items import NewItems, newest_by_category, pick_new_items, place_new_items, taste_categories
from serving.rerank import session_shares

CATEGORIES = {**{f"s{n}": "shoes" for n in range(10)}, **{f"h{n}": "hats" for n in range(10)},
              **{f"b{n}": "bags" for n in range(10)}}


def test_taste_is_the_open_session_else_the_stored_list_main_categories_only() -> None:
    stored = ["s1", "s2", "s3", "h1", "h2", "b1"]
    assert taste_categories(stored, {}, CATEGORIES) == ["shoes", "hats"]  # bags: 1 < 3 / 2
    assert taste_categories(stored, {"bags": 0.5, "hats": 0.3, "shoes": 0.2}, CATEGORIES) == ["bags", "hats"]
    assert taste_categories(["x", "y"], {}, CATEGORIES) == []


def test_picks_go_round_the_categories_and_spread_users_over_a_pool() -> None:
    pools = {"shoes": (tuple(f"ns{n}" for n in range(5)),), "hats": (("nh0",),)}
    picks = pick_new_items("u1", ["shoes", "hats"], pools, lambda item: True, 4)
    assert [CATEGORIES.get(p, p[:2]) for p in picks] == ["ns", "nh", "ns", "ns"]
    assert len(set(picks)) == 4
    # Deterministic per user; different users start at different places of the pool.
    assert picks == pick_new_items("u1", ["shoes", "hats"], pools, lambda item: True, 4)
    firsts = Counter(pick_new_items(f"u{n}", ["shoes"], pools, lambda item: True, 1)[0] for n in range(200))
    assert set(firsts) == set(pools["shoes"][0]) and max(firsts.values()) < 80
    # A newer batch comes first for everyone; the older one only once it is used up.
    batches = {"shoes": (("new1", "new2"), ("old1", "old2", "old3"))}
    assert all(set(pick_new_items(f"u{n}", ["shoes"], batches, lambda item: True, 2)) == {"new1", "new2"}
               for n in range(50))
    assert pick_new_items("u1", ["shoes"], batches, lambda item: item != "new1", 2)[0] == "new2"
    assert pick_new_items("u1", ["shoes"], pools, lambda item: False, 2) == []
    assert pick_new_items("u1", ["shoes"], pools, lambda item: True, 0) == []


def test_places_are_spread_the_list_keeps_k_and_stays_sorted() -> None:
    top = [(f"m{n}", 10.0 - n) for n in range(20)]
    placed = place_new_items(top, ["n1", "n2"], 20)
    assert [item for item, _ in placed].index("n1") == 6 and [item for item, _ in placed].index("n2") == 13
    assert len(placed) == 20 and [item for item, _ in placed if item.startswith("m")] == [f"m{n}" for n in range(18)]
    scores = [score for _, score in placed]
    assert scores == sorted(scores, reverse=True)
    short = place_new_items(top[:3], ["n1", "n2"], 20)  # fewer model items than k: nothing gives way
    assert [item for item, _ in short] == ["m0", "n1", "m1", "n2", "m2"]


def test_pools_hold_available_unlearned_items_newest_first() -> None:
    catalogue = Catalogue(3, frozenset({"s5"}), CATEGORIES)
    learned = {f"s{n}" for n in range(3)} | {f"h{n}" for n in range(10)}
    published = {f"s{n}": 1_000 + n // 2 for n in range(10)}
    pools = newest_by_category(catalogue, learned, published, pool=3)
    assert pools == {"shoes": (("s8", "s9"), ("s6",)), "bags": (("b0", "b1", "b2"),)}


def test_shape_respects_filters_blocks_slots_and_the_cap() -> None:
    rng = random.Random(4)
    catalogue = Catalogue(1, frozenset({"s7"}), CATEGORIES)
    new = NewItems(newest_by_category(catalogue, {f"s{n}" for n in range(5)} | {f"h{n}" for n in range(10)}, {}))
    top = [(f"h{n}", 5.0 - n / 10) for n in range(10)]
    stored = [[item, score] for item, score in top]
    for _ in range(300):
        blocked = frozenset(rng.sample(sorted(CATEGORIES), 4))
        wanted = ItemFilter(catalogue, frozenset({"s6"})).blocking(blocked, frozenset(rng.choice([(), ("bags",)])))
        k, slots, cap = rng.randint(1, 10), rng.randint(0, 4), rng.choice([None, 1, 2])
        session = session_shares(rng.sample(sorted(CATEGORIES), rng.randint(0, 6)), {}, CATEGORIES)
        got = new.shape(f"u{rng.randrange(50)}", top[:k], stored, session, CATEGORIES, wanted.allows, slots, k, cap)
        added = [item for item, _ in got if item not in dict(top)]
        assert len(got) == k and len(added) <= min(slots, k // 2)
        assert all(wanted.allows(item) for item in added) and not {"s6", "s7"} & set(added)
        assert all(any(item in batch for batch in new.pools.get(CATEGORIES[item], ())) for item in added)
        if cap is not None:
            counts = Counter(CATEGORIES[item] for item, _ in got)
            assert all(counts[CATEGORIES[item]] <= max(cap, Counter(CATEGORIES[i] for i, _ in top[:k])[
                CATEGORIES[item]]) for item in added)
    # A shoes session on a hats list: shoes leads the tastes and hats has no new items, so both places are shoes.
    got = new.shape("u1", top, stored, {"shoes": 0.6, "hats": 0.4}, CATEGORIES, ItemFilter(catalogue).allows, 2, 10)
    assert [CATEGORIES[item] for item, _ in got].count("shoes") == 2 and len(got) == 10
    assert NewItems().shape("u1", top, stored, {}, CATEGORIES, ItemFilter(catalogue).allows, 2, 10) == top
