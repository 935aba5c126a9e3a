"""Category blocks and the cap on blocks, against real Redis and the running shim (issue #16, build item 3).

Users' scores, popularity and the catalogue are written as the job writes them (``RedisWriter``);
blocks go through the endpoint. A blocked category holds from the next request on in the model's
list, the popularity fallback and similar items; a POST past ``PULSE_SERVING_MAX_BLOCKS`` answers
422 and changes nothing, also when many arrive at once; erasure deletes both sets.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis as redis_lib

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CatalogueValue, CompactValue, encode_item_value, encode_user_value
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update
from tests.integration.test_similar_items import wait_until

T0 = 1_700_000_000_000
ITEMS = [f"i{n}" for n in range(40)]
CATEGORY = {item: f"c{n % 4}" for n, item in enumerate(ITEMS)}


def seed(writer: RedisWriter, keys: RedisKeys) -> None:
    """u1 with all 40 items ranked; popularity of 20 items; every item's factors (by category) and catalogue entry."""
    session = {"open": False}
    recs = {"items": [[item, 5.0 - n / 100] for n, item in enumerate(ITEMS)], "global_mean": 3.5}
    user = encode_user_value({"counts": {"view": 1}, "events": 1, "learned": 1}, session,
                             {"bias": 0.0, "factors": [0.1]}, recs)
    factors = {item: [1.0 if CATEGORY[item] == "c0" else 0.5, n / 100] for n, item in enumerate(ITEMS)}
    writer.write_batch([
        (keys.user_record("u1"), T0, CompactValue(user)),
        (keys.popularity("*"), T0, {"segment": "*", "items": [[item, 100.0 - n] for n, item in enumerate(ITEMS[:20])],
                                    "at_ms": T0, "half_life_ms": 0}),
        *((keys.item_record(item), T0, CompactValue(encode_item_value({"bias": 0.0, "factors": vector})))
          for item, vector in factors.items()),
        *((keys.catalogue_item(item), T0, CatalogueValue(item, CATEGORY[item], True)) for item in ITEMS),
    ])


def served(client: Any, user: str, k: int = 10) -> tuple[str, list[str]]:
    body = client.get(f"/v1/users/{user}/recommendations", params={"k": k}).json()
    return body["source"], [item["item_id"] for item in body["items"]]


def test_a_blocked_category_leaves_recommendations_popularity_and_similar_items(
    serve: Any, settings: Settings, redis_url: str, redis_client: redis_lib.Redis,  # noqa: F811
) -> None:
    keys = RedisKeys(f"{settings.redis_prefix}-blocks")
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        seed(writer, keys)
    client = serve(redis_prefix=keys.prefix)
    time.sleep(1.0)  # the workers' catalogue poll (every 0.5 s by default) has read the categories
    wait_until(lambda: served(client, "u1")[1] == ITEMS[:10], timeout_s=5.0)
    assert served(client, "cold")[0] == "popularity"

    for user in ("u1", "cold"):  # the model's list and the popularity fallback alike
        response = client.post(f"/v1/users/{user}/blocks", json={"categories": ["c1", "c2"], "item_ids": ["i0"]})
        assert response.status_code == 200
        assert response.json() == {"user_id": user, "item_ids": ["i0"], "categories": ["c1", "c2"], "changed": 3}
        source, got = served(client, user)
        pool = ITEMS if user == "u1" else ITEMS[:20]  # the popularity holds 20 items
        expected = [item for item in pool if CATEGORY[item] in ("c0", "c3") and item != "i0"]
        assert got == expected[:10], (user, source, got)
        print(f"category blocks: {user} ({source}) after blocking c1, c2 and i0: {got}")
    assert client.get("/v1/users/u1/blocks").json() == {"user_id": "u1", "item_ids": ["i0"],
                                                        "categories": ["c1", "c2"], "changed": 0}

    # Similar items: the user's blocks apply only when the request names the user.
    wait_until(lambda: client.get("/v1/items/i4/similar").status_code == 200, timeout_s=5.0)
    plain = [i["item_id"] for i in client.get("/v1/items/i4/similar", params={"k": 39}).json()["items"]]
    mine = [i["item_id"] for i in client.get("/v1/items/i4/similar", params={"k": 39, "user_id": "u1"}).json()["items"]]
    assert len(plain) == 39 and {CATEGORY[item] for item in plain} == {"c0", "c1", "c2", "c3"}
    assert mine == [item for item in plain if CATEGORY[item] in ("c0", "c3") and item != "i0"]

    # Unblocking one category brings it back from the next request on.
    response = client.request("DELETE", "/v1/users/u1/blocks", json={"categories": ["c1"]})
    assert response.status_code == 200 and response.json()["categories"] == ["c2"] and response.json()["changed"] == 1
    assert served(client, "u1", 40)[1] == [item for item in ITEMS if CATEGORY[item] != "c2" and item != "i0"]
    assert client.post("/v1/users/u1/blocks", json={}).status_code == 400
    assert client.post("/v1/users/u1/blocks", json={"categories": []}).status_code == 400

    # Erasure deletes both sets.
    assert client.delete("/v1/users/u1").status_code == 202
    assert redis_client.exists(keys.blocks("u1"), keys.blocked_categories("u1")) == 0


def test_a_post_past_the_cap_answers_422_and_changes_nothing(
    serve: Any, settings: Settings, redis_client: redis_lib.Redis,  # noqa: F811
) -> None:
    keys = RedisKeys(f"{settings.redis_prefix}-cap")
    client = serve(redis_prefix=keys.prefix, serving_max_blocks=5)
    assert client.post("/v1/users/u1/blocks", json={"item_ids": ["a", "b", "c"], "categories": ["x"]}).json()[
        "changed"] == 4
    over = client.post("/v1/users/u1/blocks", json={"item_ids": ["d", "e"]})
    assert over.status_code == 422 and over.json()["error"] == "too_many_blocks"
    assert "at most 5" in over.json()["detail"], over.json()
    assert client.get("/v1/users/u1/blocks").json()["item_ids"] == ["a", "b", "c"]
    # Blocks already held do not count again; the fifth fits; then nothing more, items or categories.
    again = client.post("/v1/users/u1/blocks", json={"item_ids": ["a", "a", "d"], "categories": ["x"]})
    assert again.status_code == 200 and again.json()["changed"] == 1
    assert client.post("/v1/users/u1/blocks", json={"categories": ["y"]}).status_code == 422
    assert redis_client.scard(keys.blocks("u1")) + redis_client.scard(keys.blocked_categories("u1")) == 5
    # Unblocking makes room.
    assert client.request("DELETE", "/v1/users/u1/blocks", json={"item_ids": ["a"]}).json()["changed"] == 1
    assert client.post("/v1/users/u1/blocks", json={"categories": ["y"]}).status_code == 200

    # 40 requests at once, one new item each, for a user with room for 5: exactly 5 are let in.
    def post(n: int) -> int:
        return client.post("/v1/users/u2/blocks", json={"item_ids": [f"item-{n}"]}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(post, range(40)))
    assert sorted(codes) == [200] * 5 + [422] * 35
    assert redis_client.scard(keys.blocks("u2")) == 5
    print(f"blocks cap 5: 40 concurrent POSTs -> {codes.count(200)} accepted, {codes.count(422)} answered 422")
