"""The session re-rank and the diversity cap (serving/rerank.py), and both through the recommender."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Sequence

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas.redis_keys import Envelope, RedisKeys
from serving.catalogue import CatalogueView
from serving.recommendations import Recommender
from serving.rerank import cap_per_category, session_rerank, session_shares

T0 = 1_700_000_000_000
CATEGORIES = [f"c{n}" for n in range(5)]


def planted(rng: random.Random) -> tuple[list[tuple[str, float]], dict[str, str]]:
    """A user's stored top-50 as the model ranks it: 200 items in 5 categories, the user's taste leaning to c0/c1."""
    category = {f"i{n}": CATEGORIES[n % 5] for n in range(200)}
    taste = {"c0": 0.6, "c1": 0.4, "c2": 0.0, "c3": -0.1, "c4": -0.2}
    scores = {item: 3.5 + taste[category[item]] + rng.gauss(0.0, 0.35) for item in category}
    return sorted(scores.items(), key=lambda pair: -pair[1])[:50], category


def share(items: Sequence[tuple[str, float]], category: dict[str, str], name: str) -> float:
    return sum(category[item] == name for item, _ in items) / len(items)


def test_a_session_in_one_category_raises_its_share_of_the_top_10() -> None:
    rng = random.Random(16)
    before_shares, after_shares = [], []
    for _ in range(200):  # 200 users, each with a session of views in c3, a category the model ranks low for them
        ranked, category = planted(rng)
        viewed = rng.sample([item for item in category if category[item] == "c3"], 5)
        shares = session_shares(viewed, {}, category)
        assert shares == {"c3": 1.0}
        reranked = session_rerank(ranked, shares, category, boost=0.5)
        assert sorted(reranked, key=lambda pair: -pair[1]) == reranked and len(reranked) == len(ranked)
        before_shares.append(share(ranked[:10], category, "c3"))
        after_shares.append(share(reranked[:10], category, "c3"))
    before, after = sum(before_shares) / 200, sum(after_shares) / 200
    print(f"c3's share of the top-10 after a session of 5 views in c3 (200 users, boost 0.5): "
          f"before {before:.1%}, after {after:.1%}")
    assert after > before + 0.1  # measured: 0.5 % -> 16.9 % (only c3 items within the stored top-50 can rise)
    assert session_rerank(ranked, shares, category, boost=0.0) == ranked  # off: the model's list as stored


ranked_lists = st.lists(st.tuples(st.integers(0, 60), st.sampled_from([*CATEGORIES[:3], None])),
                        max_size=60, unique_by=lambda pair: pair[0])


@given(ranked_lists, st.integers(1, 5), st.integers(1, 30))
@hypothesis_settings(max_examples=400, deadline=None, derandomize=True)
def test_the_cap_holds_exactly_and_k_is_kept_while_enough_items_are_eligible(
    items: list[tuple[int, str | None]], cap: int, k: int,
) -> None:
    ranked = [(f"i{n}", float(-position)) for position, (n, _) in enumerate(items)]
    category = {f"i{n}": name for n, name in items if name is not None}
    got = cap_per_category(ranked, category, cap, k)
    per_category = Counter(category[item] for item, _ in got if item in category)
    assert all(count <= cap for count in per_category.values())  # the cap, exactly
    available = Counter(category.get(item) for item, _ in ranked)
    eligible = sum(n if name is None else min(n, cap) for name, n in available.items())
    assert len(got) == min(k, eligible)  # k kept while enough eligible items exist
    positions = [ranked.index(pair) for pair in got]
    assert positions == sorted(positions)  # in the ranked order
    taken: Counter[str | None] = Counter()
    for pair in ranked[:positions[-1] + 1] if got else []:
        name = category.get(pair[0])
        if pair in got:
            taken[name] += 1
        else:  # an item is only ever skipped because its category had reached the cap
            assert name is not None and taken[name] >= cap


class Store:
    """A user with 8 ranked items (categories a/b), an open session on b's items, and a blocked item."""

    keys = RedisKeys("pulse")

    def __init__(self) -> None:
        self.blocked: frozenset[str] = frozenset({"a1"})
        self.blocked_categories: frozenset[str] = frozenset()
        self.tops: list[int | None] = []

    async def user_view_blocked(self, user_id: str, top: int | None = None
                                ) -> tuple[Envelope | None, Envelope | None, frozenset[str], frozenset[str]]:
        self.tops.append(top)
        recs = {"items": [[f"a{n}", 4.0 - n / 10] for n in range(4)] + [[f"b{n}", 3.5 - n / 10] for n in range(4)],
                "global_mean": 3.5}
        session = {"open": True, "recent_items": ["b9"], "categories": {}}
        return (Envelope(recs, T0, T0, "mf-v1"), Envelope(session, T0, T0, "mf-v1"), self.blocked,
                self.blocked_categories)

    async def catalogue_version(self) -> int:
        return 1

    async def catalogue_indexes(self) -> tuple[set[str], dict[str, str]]:
        return set(), {**{f"a{n}": "a" for n in range(10)}, **{f"b{n}": "b" for n in range(10)}}

    async def explain_inputs(self, user_id: str, items: Sequence[str]) -> tuple[Envelope | None, list[Envelope | None]]:
        user = Envelope({"bias": 0.0, "factors": [0.0]}, T0, T0, "mf-v1")
        return user, [Envelope({"bias": 0.0, "factors": [0.0]}, T0, T0, "mf-v1") for _ in items]


def test_the_recommender_blocks_boosts_caps_and_explains_the_boost() -> None:
    store = Store()
    catalogue = CatalogueView(store, refresh_s=1.0)  # type: ignore[arg-type]
    asyncio.run(catalogue.refresh())
    recommender = Recommender(store, catalogue=catalogue, blocks=True)  # type: ignore[arg-type]

    def ids(**kwargs: object) -> list[str]:
        body = asyncio.run(recommender.recommend("u1", 4, **kwargs))  # type: ignore[arg-type]
        return [item["item_id"] for item in body["items"]]

    assert ids() == ["a0", "a2", "a3", "b0"] and store.tops[-1] == 4  # a1 blocked (the store decodes 1 more)
    assert ids(session_boost=0.35) == ["a0", "b0", "a2", "b1"]  # b lifted by 0.35 x share 1.0
    assert ids(max_per_category=2) == ["a0", "a2", "b0", "b1"] and store.tops[-1] is None  # whole list read
    assert ids(session_boost=1.0, max_per_category=1) == ["b0", "a0"]  # fewer than k: only 2 within the cap
    body = asyncio.run(recommender.recommend("u1", 2, explain=True, session_boost=0.5))
    why = [(item["item_id"], item["score"], item["explanation"]) for item in body["items"]]
    assert [(item, score) for item, score, _ in why] == [("a0", 4.0), ("b0", 4.0)]
    assert [e["session_boost"] if e else None for _, _, e in why] == [0.0, 0.5]
    store.blocked = frozenset()
    assert ids() == ["a0", "a1", "a2", "a3"]  # unblocked: back from the next request on
    assert Recommender(store, catalogue=catalogue, blocks=True,  # type: ignore[arg-type]
                       session_boost=1.0).session_boost == 1.0
