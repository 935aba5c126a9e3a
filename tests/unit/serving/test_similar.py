"""Similar items (serving/similar.py): the pure ranking, the index, and category/item blocks in the recommender."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from schemas.redis_keys import Envelope, RedisKeys, item_id_of_key
from schemas.redis_values import encode_item_value, with_header
from serving.catalogue import Catalogue, CatalogueView
from serving.recommendations import Recommender
from serving.similar import ItemIndex, SimilarIndexView, most_similar, similar_items

T0 = 1_700_000_000_000


def clustered(rng: random.Random, n_clusters: int = 4, per_cluster: int = 25) -> dict[str, list[float]]:
    """Items around ``n_clusters`` orthogonal directions (8 factors), a little noise each."""
    factors = {}
    for cluster in range(n_clusters):
        for n in range(per_cluster):
            vector = [rng.gauss(0.0, 0.1) for _ in range(8)]
            vector[cluster] += 1.0
            factors[f"c{cluster}-{n}"] = vector
    return factors


def test_planted_clusters_give_same_cluster_neighbours() -> None:
    index = ItemIndex.build(clustered(random.Random(1)))
    for item in index.items:
        found = index.similar(item, 10)
        assert found is not None and len(found) == 10
        assert all(other.split("-")[0] == item.split("-")[0] for other, _ in found), (item, found)
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        assert item not in [other for other, _ in found]


@hypothesis_settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(1, 70), seed=st.integers(0, 10_000), refused=st.floats(0.0, 1.0))
def test_the_ranking_keeps_k_eligible_items_in_similarity_order(n: int, k: int, seed: int, refused: float) -> None:
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(n, 4)).astype(np.float32)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    banned = {row for row in range(n) if rng.random() < refused}
    found = most_similar(unit, 0, k, lambda row: row not in banned)
    eligible = [row for row in range(1, n) if row not in banned]
    # What a plain full sort gives: every eligible row by similarity (ties to the lower row), the first k.
    expected = sorted(eligible, key=lambda row: (-float(unit[row] @ unit[0]), row))[:k]
    assert [row for row, _ in found] == expected
    assert len(found) == min(k, len(eligible))
    assert all(abs(s - float(unit[row] @ unit[0])) < 1e-5 for row, s in found)


@hypothesis_settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 800), seed=st.integers(0, 10_000),
       asks=st.lists(st.tuples(st.integers(1, 300), st.floats(0.0, 0.99)), min_size=1, max_size=4))
def test_the_index_answers_from_its_ranked_rows_as_a_full_sort_would(
    n: int, seed: int, asks: list[tuple[int, float]]
) -> None:
    """One item asked for again and again (other k, other filters): the ranked rows kept per index
    give what a plain full sort of every item gives."""
    rng = np.random.default_rng(seed)
    index = ItemIndex.build({f"i{row}": rng.normal(size=4).tolist() for row in range(n)})
    target = index.items[0]
    for k, refused in asks:
        banned = {item for item in index.items if rng.random() < refused}
        found = index.similar(target, k, lambda item, banned=banned: item not in banned)  # type: ignore[misc]
        assert found is not None
        row = index.rows[target]
        # One matrix-vector product, as the index takes it: a dot product per row sums in another order,
        # and two float32 similarities that equal there can differ in the last bit (n=273, seed=904, k=79).
        similarity = index.unit @ index.unit[row]
        eligible = [other for other in index.items if other != target and other not in banned]
        expected = sorted(eligible, key=lambda other: (-float(similarity[index.rows[other]]), index.rows[other]))
        assert [item for item, _ in found] == expected[:k]
    assert row in index.ranked  # the rows were kept for the next request


def test_the_index_drops_other_lengths_and_keeps_zero_vectors_harmless() -> None:
    index = ItemIndex.build({"a": [1.0, 0.0], "b": [0.0, 0.0], "c": [1.0, 1.0], "old": [1.0, 0.0, 0.0]},
                            {"a": "mf-2", "b": "mf-2", "c": "mf-2", "old": "mf-1"})
    assert index.items == ("a", "b", "c") and index.dropped == 1 and index.version_of("a") == "mf-2"
    assert index.similar("old", 3) is None and index.version_of("old") is None
    assert [item for item, _ in index.similar("a", 3) or []] == ["c", "b"]
    assert index.similar("b", 2) == [("a", 0.0), ("c", 0.0)]
    assert len(ItemIndex.build({})) == 0


def test_item_keys_parse_back_to_their_ids() -> None:
    keys = RedisKeys("p-1:x")
    for item in ("i1", "a{b}c", "50%", "x:params", "%7B"):
        assert item_id_of_key(keys.item_record(item), keys.prefix) == (item, True)
        assert item_id_of_key(keys.item_params(item), keys.prefix) == (item, False)
    assert item_id_of_key(keys.user_record("i1"), keys.prefix) is None
    assert item_id_of_key(RedisKeys("p-1").item_record("i1"), keys.prefix) is None


class Store:
    """Item records in both formats, a catalogue, and one user's blocks and (empty) model list."""

    def __init__(self) -> None:
        self.keys = RedisKeys("pulse")
        self.legacy_reads = True
        factors = {"a": [1.0, 0.0], "b": [0.9, 0.1], "c": [0.8, 0.2], "d": [0.0, 1.0], "e": [0.7, 0.3]}
        self.values: dict[str, Any] = {self.keys.item_record(item): with_header(
            encode_item_value({"bias": 0.0, "factors": vector}), T0, T0, "mf-2") for item, vector in factors.items()}
        # Format 1 only for f; both for a (format 2 wins: a's format-1 factors would put it elsewhere).
        self.values[self.keys.item_params("f")] = Envelope({"bias": 0.0, "factors": [0.95, 0.05]}, T0, T0,
                                                           "mf-1").to_fields()
        self.values[self.keys.item_params("a")] = Envelope({"bias": 0.0, "factors": [0.0, 1.0]}, T0, T0,
                                                           "mf-1").to_fields()
        self.values[self.keys.item_record("bad")] = b"\x02bad"  # no item record: skipped
        self.blocks: tuple[frozenset[str], frozenset[str]] = (frozenset({"b"}), frozenset({"hats"}))
        self.learned: list[str] | None = None  # the job's set of learned items (None: a Redis from before it)
        self.scans = 0

    async def set_page(self, key: str, cursor: int, count: int) -> tuple[int, list[str]] | None:
        assert key == self.keys.learned_items()
        if self.learned is None:
            return None
        return (0 if cursor + 2 >= len(self.learned) else cursor + 2), self.learned[cursor:cursor + 2]

    async def scan(self, pattern: str, cursor: int, count: int) -> tuple[int, list[str]]:
        assert pattern == f"{self.keys.prefix}:item:{{*"
        self.scans += 1
        names = sorted(self.values)
        return (0 if cursor + 2 >= len(names) else cursor + 2), names[cursor:cursor + 2]

    async def read_raw(self, commands: Sequence[tuple[str, str]]) -> list[Any]:
        return [self.values.get(key) for _, key in commands]

    async def blocked(self, user_id: str) -> tuple[frozenset[str], frozenset[str]]:
        return self.blocks

    async def user_view_blocked(self, user_id: str, top: int | None = None) -> tuple[Any, Any, Any, Any]:
        return None, None, *self.blocks

    async def popularity(self, segments: Sequence[str]) -> list[Envelope | None]:
        items = [["p1", 9.0], ["p2", 8.0], ["p3", 7.0], ["p4", 6.0]]
        return [Envelope({"items": items, "at_ms": T0, "half_life_ms": 0}, T0, T0, "mf-2")] * len(segments)

    async def catalogue_version(self) -> int:
        return 1

    async def catalogue_indexes(self) -> tuple[set[str], dict[str, str]]:
        return {"c", "p3"}, {"e": "hats", "d": "shoes", "p1": "hats", "p2": "shoes"}


def test_the_view_reads_both_formats_and_the_request_applies_catalogue_filters_and_blocks() -> None:
    store = Store()
    view = SimilarIndexView(store, refresh_s=60.0, clock_ms=lambda: T0)  # type: ignore[arg-type]
    catalogue = CatalogueView(store, refresh_s=1.0)  # type: ignore[arg-type]

    async def run() -> None:
        assert await view.refresh() and not await view.refresh()  # the second is within refresh_s
        assert view.current.items == ("a", "b", "c", "d", "e", "f") and view.current.read_at_ms == T0
        await catalogue.refresh()

        async def ids(**kwargs: Any) -> list[str]:
            found = await similar_items(view, catalogue.current, "a", kwargs.pop("k", 3), **kwargs)
            assert found is not None and found.model_version == "mf-2"
            return [item.item_id for item in found.items]

        assert await ids() == ["f", "b", "e"]  # c unavailable; a's format-2 factors, not its format-1 ones
        assert await ids(user_id="u1") == ["f", "d"]  # b blocked, e of the blocked category hats
        assert await ids(exclude=["f"], categories=["hats", "shoes"], k=5) == ["e", "d"]
        assert await ids(exclude_categories=["shoes"], k=10) == ["f", "b", "e"]
        assert await similar_items(view, catalogue.current, "zz", 3) is None
        store.keys = RedisKeys("other")  # the live prefix moved (a promote): read again at once
        store.values = {}
        assert await view.refresh() and len(view.current) == 0

    asyncio.run(run())


def test_the_view_reads_the_items_the_job_listed_and_scans_only_a_redis_without_the_list(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Store()
    view = SimilarIndexView(store, refresh_s=0.0, clock_ms=lambda: T0)  # type: ignore[arg-type]
    asyncio.run(view.refresh())  # no set: the keyspace is scanned, with one warning
    assert store.scans > 0 and view.current.items == ("a", "b", "c", "d", "e", "f")
    assert [r.message for r in caplog.records if "SCAN" in r.message] == [
        "similar items: 8 item keys under 'pulse' but no set pulse:{items}:learned (written by a job before it): "
        "read by a SCAN of the whole keyspace, every 0.0 s; `pulse model index-items` writes the set"]
    asyncio.run(view.refresh())
    assert len([r for r in caplog.records if "SCAN" in r.message]) == 1  # once per prefix

    store.learned, store.scans = ["a", "d", "f", "gone"], 0  # b, c, e have records but are not listed
    asyncio.run(view.refresh())
    assert store.scans == 0 and view.current.items == ("a", "d", "f")  # f in format 1 only; gone has no record
    assert view.current.version_of("a") == "mf-2"  # format 2 wins over a's format-1 hash
    store.legacy_reads = False
    asyncio.run(view.refresh())
    assert view.current.items == ("a", "d")

    store.keys, store.values, store.learned = RedisKeys("fresh"), {}, None  # nothing learned yet: no warning
    asyncio.run(view.refresh())
    assert len(view.current) == 0 and len([r for r in caplog.records if "SCAN" in r.message]) == 1


def test_the_popularity_fallback_leaves_out_blocked_items_and_categories() -> None:
    store = Store()
    catalogue = CatalogueView(store, refresh_s=1.0)  # type: ignore[arg-type]
    asyncio.run(catalogue.refresh())
    recommender = Recommender(store, catalogue=catalogue, blocks=True)  # type: ignore[arg-type]
    store.blocks = (frozenset({"p4"}), frozenset({"hats"}))
    body = asyncio.run(recommender.recommend("u1", 4))
    assert body["source"] == "popularity" and [i["item_id"] for i in body["items"]] == ["p2"]  # p3 unavailable
    store.blocks = (frozenset(), frozenset())
    assert [i["item_id"] for i in asyncio.run(recommender.recommend("u1", 4))["items"]] == ["p1", "p2", "p4"]


def test_an_empty_catalogue_allows_everything() -> None:
    assert Catalogue().allows("x") and ItemIndex().similar("x", 1) is None
