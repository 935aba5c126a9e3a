"""Blocks, the diversity cap and the session re-rank, against real Redis and the running shim (issue #16).

Users' scores, sessions and the catalogue are written as the job writes them (``RedisWriter``:
format-2 user values, catalogue entries with their indexes); blocks go through the endpoint.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CatalogueValue, CompactValue, encode_user_value
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

T0 = 1_700_000_000_000
ITEMS = [f"i{n}" for n in range(200)]
CATEGORIES = [f"c{n}" for n in range(5)]
CATEGORY = {item: CATEGORIES[n % 5] for n, item in enumerate(ITEMS)}
TASTE = {"c0": 0.6, "c1": 0.4, "c2": 0.0, "c3": -0.1, "c4": -0.2}  # every user leans to c0 and c1
N_USERS, N_REQUESTS = 20, 500


def user_value(ranked: list[tuple[str, float]], recent: list[str]) -> CompactValue:
    session = {"open": True, "session_id": "s", "start_ms": T0, "end_ms": T0, "n_events": len(recent), "n_late": 0,
               "counts": {"view": len(recent)}, "recent_items": recent, "categories": {}}
    recs = {"items": [[item, score] for item, score in ranked], "global_mean": 3.5}
    return CompactValue(encode_user_value({"counts": {"view": len(recent)}, "events": len(recent), "learned": 0},
                                          session, {"bias": 0.0, "factors": [0.1]}, recs))


def seed(writer: RedisWriter, keys: RedisKeys,
         rng: random.Random) -> tuple[dict[str, list[tuple[str, float]]], dict[str, list[str]]]:
    """Users with a planted top-50 and an open session of 5 views in c3; the catalogue (10 items unavailable)."""
    ranked, recent = {}, {}
    writes: list[Any] = []
    for n in range(N_USERS):
        scores = {item: 3.5 + TASTE[CATEGORY[item]] + rng.gauss(0.0, 0.35) for item in ITEMS}
        ranked[f"u{n}"] = sorted(scores.items(), key=lambda pair: -pair[1])[:50]
        recent[f"u{n}"] = rng.sample([item for item in ITEMS if CATEGORY[item] == "c3"], 5)
        writes.append((keys.user_record(f"u{n}"), T0, user_value(ranked[f"u{n}"], recent[f"u{n}"])))
    writes += [(keys.catalogue_item(item), T0, CatalogueValue(item, CATEGORY[item], n % 20 != 7))
               for n, item in enumerate(ITEMS)]
    writer.write_batch(writes)
    return ranked, recent


def test_blocks_cap_and_session_boost(serve: Any, settings: Settings, redis_url: str,  # noqa: F811
                                      redis_client: Any) -> None:
    started = time.monotonic()
    rng = random.Random(16)
    keys = RedisKeys(f"{settings.redis_prefix}-rerank")
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        ranked, recent = seed(writer, keys, rng)
    client = serve(redis_prefix=keys.prefix, serving_catalogue_refresh_s=0.05)
    time.sleep(0.5)  # the workers' catalogue poll has read the catalogue
    unavailable = {item for n, item in enumerate(ITEMS) if n % 20 == 7}
    url = "/v1/users/u0/recommendations"

    # A block holds from the next request on; unblocking brings the item back; erasure deletes the blocks.
    top = [item["item_id"] for item in client.get(url, params={"exclude_seen": "false"}).json()["items"]]
    blocked = client.post("/v1/users/u0/blocks", json={"item_ids": top[:2]})
    assert blocked.status_code == 200
    assert blocked.json() == {"user_id": "u0", "item_ids": sorted(top[:2]), "categories": [], "changed": 2}
    after = [item["item_id"] for item in client.get(url, params={"exclude_seen": "false"}).json()["items"]]
    assert after == top[2:] + after[8:] and len(after) == 10 and not set(top[:2]) & set(after)
    assert client.get("/v1/users/u0/blocks").json()["item_ids"] == sorted(top[:2])
    unblocked = client.request("DELETE", "/v1/users/u0/blocks", json={"item_ids": [top[0]]})
    assert unblocked.status_code == 200 and unblocked.json()["item_ids"] == [top[1]]
    again = [item["item_id"] for item in client.get(url, params={"exclude_seen": "false"}).json()["items"]]
    assert again[0] == top[0] and top[1] not in again
    assert client.post("/v1/users/u0/blocks", json={"item_ids": []}).status_code == 400
    assert client.post("/v1/users/u0/blocks", json={"item_ids": ["i1"]},
                       headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.delete("/v1/users/u0").status_code == 202
    assert redis_client.exists(keys.blocks("u0")) == 0

    # The diversity cap holds exactly over random requests, and lists keep k while enough items are eligible.
    short = 0
    for _ in range(N_REQUESTS):
        user, k, cap = f"u{rng.randrange(1, N_USERS)}", rng.randint(1, 12), rng.randint(2, 8)
        boost = rng.choice([0.0, 0.0, 0.5, 2.0])
        params: dict[str, Any] = {"k": k, "max_per_category": cap, "session_boost": boost,
                                  "exclude_category": rng.sample(CATEGORIES, rng.choice([0, 0, 1]))}
        got = [item["item_id"] for item in client.get(f"/v1/users/{user}/recommendations", params=params)
               .json()["items"]]
        eligible = Counter(CATEGORY[item] for item, _ in ranked[user] if item not in unavailable
                           and item not in recent[user] and CATEGORY[item] not in params["exclude_category"])
        per_category = Counter(CATEGORY[item] for item in got)
        assert max(per_category.values(), default=0) <= cap, (params, got)
        assert len(got) == min(k, sum(min(n, cap) for n in eligible.values())), (params, got)
        assert len(set(got)) == len(got) and not set(got) & unavailable
        short += len(got) < k
    print(f"{N_REQUESTS} random requests with max_per_category: the cap held in every one; "
          f"{short} had fewer than k eligible items within the cap")
    assert short < N_REQUESTS / 2

    # A session of views in c3 raises c3's share of the top-10 (the model ranks c3 low for every user).
    def c3_share(boost: float) -> float:
        lists = [client.get(f"/v1/users/u{n}/recommendations", params={"k": 10, "session_boost": boost}).json()
                 for n in range(1, N_USERS)]
        return sum(CATEGORY[item["item_id"]] == "c3" for body in lists for item in body["items"]) / (10 * len(lists))

    before, boosted = c3_share(0.0), c3_share(0.5)
    print(f"c3's share of the served top-10 after a session of 5 views in c3 ({N_USERS - 1} users): "
          f"session_boost 0: {before:.1%}, session_boost 0.5: {boosted:.1%}")
    assert boosted > before + 0.05
    print(f"took {time.monotonic() - started:.1f} s")
