"""Similar items against real Redis and the running shim (issue #16, build item 5).

Item factors and the catalogue are written as the job writes them (``RedisWriter``: format-2 item
records, catalogue entries with their indexes through the guarded catalogue script); the user's
blocks go through the endpoint. Planted clusters of item factors must give same-cluster neighbours;
an item marked unavailable leaves every similar list within 2 s; random filtered requests must hold
only allowed items, most similar first, and ``k`` of them while that many are eligible.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CatalogueValue, CompactValue, encode_item_value
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

T0 = 1_700_000_000_000
CLUSTERS, PER_CLUSTER, DIMENSION = 5, 40, 8
N_REQUESTS = 300


def planted(rng: random.Random) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Items around one direction per cluster (a little noise); each item's catalogue category is its cluster."""
    factors, category = {}, {}
    for cluster in range(CLUSTERS):
        for n in range(PER_CLUSTER):
            vector = [rng.gauss(0.0, 0.15) for _ in range(DIMENSION)]
            vector[cluster] += 1.0
            item = f"i{cluster * PER_CLUSTER + n}"
            factors[item], category[item] = vector, f"c{cluster}"
    return factors, category


def item_record(vector: list[float]) -> CompactValue:
    return CompactValue(encode_item_value({"bias": 0.1, "factors": vector, "version": 3}))


def similar(client: Any, item: str, **params: Any) -> list[tuple[str, float]]:
    response = client.get(f"/v1/items/{item}/similar", params=params)
    assert response.status_code == 200, response.text
    return [(entry["item_id"], entry["similarity"]) for entry in response.json()["items"]]


def wait_until(condition: Any, timeout_s: float, every_s: float = 0.02) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(every_s)
    return time.monotonic() - started


def test_similar_items_cluster_follow_the_catalogue_and_hold_the_filters(
    serve: Any, settings: Settings, redis_url: str,  # noqa: F811
) -> None:
    rng = random.Random(5)
    keys = RedisKeys(f"{settings.redis_prefix}-similar")
    factors, category = planted(rng)
    unavailable = set(rng.sample(sorted(factors), 12))
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([(keys.item_record(item), T0, item_record(vector)) for item, vector in factors.items()]
                           + [(keys.catalogue_item(item), T0, CatalogueValue(item, category[item], item not in
                                                                             unavailable)) for item in factors])
    client = serve(redis_prefix=keys.prefix, serving_similar_refresh_s=0.5)
    time.sleep(1.0)  # the workers' catalogue poll (every 0.5 s by default) has read version 1

    # Planted clusters: the top-10 of every item is of its own cluster (its catalogue category).
    same = 0
    for item in factors:
        body = client.get(f"/v1/items/{item}/similar", params={"k": 10}).json()
        assert body["item_id"] == item and body["model_version"] == "mf-v1" and body["indexed_at_ms"] > 0
        got = [entry["item_id"] for entry in body["items"]]
        assert len(got) == 10 and item not in got and not set(got) & unavailable
        same += sum(category[other] == category[item] for other in got)
    share = same / (10 * len(factors))
    print(f"similar items: {share:.0%} of the top-10 share the item's category "
          f"(random baseline {(PER_CLUSTER - 1) / (len(factors) - 1):.0%})")
    assert share >= 0.99

    # Unknown item: 404 with a reason; a new item is found from the next index read on.
    missing = client.get("/v1/items/new-1/similar")
    assert missing.status_code == 404 and "no factors" in missing.json()["detail"]
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([(keys.item_record("new-1"), T0 + 1, item_record(factors["i0"]))])
    wait_until(lambda: client.get("/v1/items/new-1/similar").status_code == 200, timeout_s=5.0)
    assert {other for other, _ in similar(client, "new-1", k=5)} <= {i for i in factors if category[i] == "c0"}
    vectors = {**factors, "new-1": factors["i0"]}
    # new-1 has no catalogue entry: no category, available.

    # Marked unavailable (the job's catalogue write): gone from every similar list within 2 s, and back.
    probe = f"i{PER_CLUSTER + 5}"
    gone = similar(client, probe, k=3)[0][0]
    holders = [item for item in factors if item != gone and gone in [o for o, _ in similar(client, item, k=10)]]
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([(keys.catalogue_item(gone), T0 + 10, CatalogueValue(gone, category[gone], False))])
        took = wait_until(lambda: gone not in [o for o, _ in similar(client, probe, k=3)], timeout_s=2.0)
        after = similar(client, probe, k=3)
        assert len(after) == 3 and all(gone not in [o for o, _ in similar(client, h, k=10)] for h in holders)
        print(f"similar items: {gone} unavailable -> gone from {len(holders)} similar lists in {took:.2f} s")
        writer.write_batch([(keys.catalogue_item(gone), T0 + 20, CatalogueValue(gone, category[gone], True))])
        wait_until(lambda: gone in [o for o, _ in similar(client, probe, k=3)], timeout_s=2.0)

    # A shopper's blocks (items and a category) apply when the request names the user.
    blocked_items = rng.sample(sorted(factors), 15)
    response = client.post("/v1/users/shopper/blocks", json={"item_ids": blocked_items, "categories": ["c3"]})
    assert response.status_code == 200 and response.json()["categories"] == ["c3"]

    # Random filtered requests: only allowed items, most similar first, k of them while that many are eligible.
    items = sorted(vectors)
    unit = {item: np.asarray(vector) / np.linalg.norm(vector) for item, vector in vectors.items()}
    short = 0
    for _ in range(N_REQUESTS):
        item, k = rng.choice(items), rng.randint(1, 60)
        exclude = rng.sample(items, rng.randint(0, 8))
        include = rng.sample(sorted(set(category.values())), rng.choice([0, 0, 1, 2]))
        exclude_categories = rng.sample([f"c{n}" for n in range(CLUSTERS) if f"c{n}" not in include],
                                        rng.choice([0, 0, 1]))
        user = rng.choice([None, "shopper"])
        params: dict[str, Any] = {"k": k, "exclude": exclude, "category": include,
                                  "exclude_category": exclude_categories}
        if user is not None:
            params["user_id"] = user
        got = similar(client, item, **params)
        refused_categories = set(exclude_categories) | ({"c3"} if user else set())
        refused = set(exclude) | unavailable | {item} | (set(blocked_items) if user else set())
        eligible = [other for other in items if other not in refused
                    and (not include or category.get(other) in include)
                    and category.get(other) not in refused_categories]
        cosine = {other: float(unit[other] @ unit[item]) for other in eligible}
        assert {other for other, _ in got} <= set(eligible), (params, got)
        assert len(got) == min(k, len(eligible)), (params, len(got), len(eligible))
        assert all(abs(s - cosine[other]) < 1e-4 for other, s in got)
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True)
        left = [cosine[other] for other in eligible if other not in {o for o, _ in got}]
        assert not left or not scores or max(left) <= scores[-1] + 1e-4  # nothing better was left out
        short += len(eligible) < k
    print(f"similar items: {N_REQUESTS} random filtered requests exact; {short} had fewer than k eligible items")
    assert short < N_REQUESTS / 2
