"""The recommender's plain-data bodies are exactly the documented ``Recommendations`` model, byte for byte."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import orjson
import pytest

from schemas.redis_keys import Envelope, RedisKeys
from serving.catalogue import CatalogueView
from serving.models import Recommendations
from serving.recommendations import PopularityCache, RecommendationsBody, Recommender
from serving.store import StoreUnavailableError

T0 = 1_700_000_000_000


class Store:
    def __init__(self, down: bool = False) -> None:
        self.down = down

    async def user_view(self, user_id: str, top: int | None = None) -> tuple[Envelope | None, Envelope | None]:
        if self.down:
            raise StoreUnavailableError("down")
        if user_id == "cold":
            return None, None
        recs = {"items": [["i1", 4.5], ["i2", 4.25], ["i3", 1e-7], ["i4", -2.0]], "global_mean": 3.5}
        return Envelope(recs, T0, T0, "mf-v1"), Envelope({"open": True, "recent_items": ["i2"]}, T0, T0, "mf-v1")

    async def popularity(self, segments: Sequence[str]) -> list[Envelope | None]:
        pop = {"items": [["p1", 3.0], ["p2", 1.5]], "at_ms": T0, "half_life_ms": 3_600_000}
        return [Envelope(pop, T0, T0, "mf-v1") if s == "*" else None for s in segments]

    async def explain_inputs(self, user_id: str, items: Sequence[str]) -> tuple[Envelope | None, list[Envelope | None]]:
        user = Envelope({"bias": 0.1, "factors": [0.5, -0.25]}, T0, T0, "mf-v1")
        params = [Envelope({"bias": 0.2, "factors": [1.0, 2.0], "version": 3}, T0, T0, "mf-v1")
                  if item != "i3" else None for item in items]
        return user, params


def _body(store: Store, user_id: str, **kwargs: object) -> RecommendationsBody:
    cache = PopularityCache(60.0)
    recommender = Recommender(store, cache, clock_ms=lambda: T0 + 60_000)  # type: ignore[arg-type]
    asyncio.run(recommender.refresh_cache())
    return asyncio.run(recommender.recommend(user_id, 10, **kwargs))  # type: ignore[arg-type]


@pytest.mark.parametrize(("store", "user_id", "kwargs"), [
    (Store(), "u1", {}),
    (Store(), "u1", {"explain": True, "exclude_seen": False}),
    (Store(), "cold", {"segment": "men"}),
    (Store(down=True), "u1", {}),
])
def test_bodies_serialise_as_the_model_does(store: Store, user_id: str, kwargs: dict[str, object]) -> None:
    body = _body(store, user_id, **kwargs)
    model = Recommendations.model_validate(body)  # every field, strictly the documented ones
    assert orjson.dumps(body) == model.__pydantic_serializer__.to_json(model)
    assert list(body) == list(Recommendations.model_fields)


def test_explanations_and_exclusion() -> None:
    body = _body(Store(), "u1", explain=True)
    assert [i["item_id"] for i in body["items"]] == ["i1", "i3", "i4"]  # i2 is in the open session
    first = body["items"][0]["explanation"]
    assert first is not None and first["total"] == pytest.approx(3.5 + 0.1 + 0.2 + 0.0)
    assert body["items"][1]["explanation"] is None  # no item parameters for i3
    degraded = _body(Store(down=True), "u1")
    assert degraded["degraded"] is True and degraded["source"] == "popularity" and degraded["segment"] == "*"


class CatalogueStore(Store):
    """Also answers the catalogue's reads: ``i1`` and ``p1`` are unavailable."""

    def __init__(self) -> None:
        super().__init__()
        self.tops: list[int | None] = []
        self.keys = RedisKeys("pulse")

    async def user_view(self, user_id: str, top: int | None = None) -> tuple[Envelope | None, Envelope | None]:
        self.tops.append(top)
        return await super().user_view(user_id, top)

    async def catalogue_version(self) -> int:
        return 4

    async def catalogue_indexes(self) -> tuple[set[str], dict[str, str]]:
        return {"i1", "p1"}, {"i1": "shoes"}


def test_unavailable_items_are_never_served_and_every_stored_score_is_a_candidate() -> None:
    store = CatalogueStore()
    catalogue = CatalogueView(store, refresh_s=1.0)  # type: ignore[arg-type]
    recommender = Recommender(store, catalogue=catalogue)  # type: ignore[arg-type]
    before = asyncio.run(recommender.recommend("u1", 2))
    assert [i["item_id"] for i in before["items"]] == ["i1", "i3"] and store.tops == [2]  # head-only decoding
    assert asyncio.run(catalogue.refresh()) is True and asyncio.run(catalogue.refresh()) is False  # version 4 kept
    after = asyncio.run(recommender.recommend("u1", 2))
    assert [i["item_id"] for i in after["items"]] == ["i3", "i4"] and store.tops[-1] is None  # k kept
    cold = asyncio.run(recommender.recommend("cold", 2))
    assert [i["item_id"] for i in cold["items"]] == ["p2"]  # popularity is filtered too
