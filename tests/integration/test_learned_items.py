"""The set of learned items: serving reads items by it, and ``pulse model index-items`` fills it for an older Redis.

Real Redis, the real shim and the real CLI. Items are written as the job writes them
(``RedisWriter``: the item's record and its id in ``RedisKeys.learned_items`` with one message),
beside many users' keys, which serving's similar-items read must not walk.
"""

from __future__ import annotations

import json
import time
from typing import Any

from typer.testing import CliRunner

from config import Settings
from flink_jobs.messages import SetMember
from flink_jobs.redis_writer import RedisWriter
from pulse.cli import app
from schemas.redis_keys import RedisKeys
from schemas.redis_values import CompactValue, encode_item_value, encode_user_value
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

T0 = 1_700_000_000_000
ITEMS, USERS = 60, 3000


def item_record(n: int) -> CompactValue:
    return CompactValue(encode_item_value({"bias": 0.0, "factors": [1.0, n / ITEMS], "version": 1}))


def users(keys: RedisKeys) -> list[tuple[str, int, Any]]:
    value = encode_user_value({"counts": {"view": 1}, "events": 1, "learned": 1}, {"open": False},
                              {"bias": 0.0, "factors": [0.1, 0.2]}, {"items": [], "global_mean": 3.5})
    return [(keys.user_record(f"u{n}"), T0, CompactValue(value)) for n in range(USERS)]


def similar_ids(client: Any, item: str) -> list[str] | None:
    response = client.get(f"/v1/items/{item}/similar", params={"k": 100})
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return [entry["item_id"] for entry in response.json()["items"]]


def test_serving_reads_the_items_the_job_listed(serve: Any, settings: Settings, redis_url: str,  # noqa: F811
                                                redis_client: Any) -> None:
    keys = RedisKeys(f"{settings.redis_prefix}-learned")
    listed = [f"i{n}" for n in range(ITEMS)]
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([*users(keys),
                            *((keys.item_record(item), T0, item_record(n)) for n, item in enumerate(listed)),
                            *((keys.learned_items(), T0, SetMember(item)) for item in listed),
                            # A record the set does not list: serving does not find it by a SCAN any more.
                            (keys.item_record("unlisted"), T0, item_record(0))])
    client = serve(redis_prefix=keys.prefix, serving_similar_refresh_s=0.5)
    deadline = time.monotonic() + 10
    while (found := similar_ids(client, "i0")) is None:
        assert time.monotonic() < deadline, "i0 not indexed within 10 s"
        time.sleep(0.1)
    assert sorted(found) == sorted(listed[1:])  # every listed item but itself, nothing else
    assert similar_ids(client, "unlisted") is None

    # Listed later (as the job does with a new item's first write): found from the next read on.
    redis_client.sadd(keys.learned_items(), "unlisted")
    deadline = time.monotonic() + 10
    while similar_ids(client, "unlisted") is None:
        assert time.monotonic() < deadline, "unlisted not indexed within 10 s of being listed"
        time.sleep(0.1)


def test_index_items_lists_the_items_of_a_redis_written_before_the_set(settings: Settings, redis_url: str,
                                                                         redis_client: Any) -> None:
    keys = RedisKeys(f"{settings.redis_prefix}-older")
    compact = [f"i{n}" for n in range(ITEMS)]
    legacy = ["x{1}", "x:2", "x%3"]  # format-1 hashes; ids with the characters keys escape
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([*users(keys), *((keys.item_record(item), T0, item_record(n))
                                            for n, item in enumerate(compact)),
                            *((keys.item_params(item), T0, {"bias": 0.0, "factors": [1.0, 0.5]}) for item in legacy)])
    assert not redis_client.exists(keys.learned_items())
    env = {"PULSE_REDIS_URL": settings.redis_url}

    def index_items() -> dict[str, Any]:
        result = CliRunner().invoke(app, ["model", "index-items", keys.prefix, "--no-progress", "--json"], env=env)
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    first = index_items()
    assert first == {"set": keys.learned_items(), "items": ITEMS + len(legacy), "added": ITEMS + len(legacy)}
    assert {member.decode() for member in redis_client.smembers(keys.learned_items())} == {*compact, *legacy}
    assert index_items()["added"] == 0  # again: nothing new
