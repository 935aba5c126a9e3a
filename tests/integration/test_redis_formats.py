"""Format 2 against format 1 on the same state, through the running shim and real Redis: the same items in
the same order, scores equal at float32 precision, explanations that add up, the job's write guard on
format-2 strings, and format-1 keys still read (an upgrade with serving first)."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest

from config import Settings
from flink_jobs.redis_writer import RedisSinkError, RedisWriter
from schemas.redis_keys import RedisKeys, UserKind
from schemas.redis_values import CompactValue, encode_item_value, encode_user_value, event_time_of
from serving.sync_reads import item_envelope, user_envelopes
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

T0 = 1_700_000_000_000
MEAN, USER_BIAS, USER_FACTORS = 3.5, 0.123456789, [0.1, -0.2, 0.3]
ITEMS = {f"i{n}": (0.01 * n - 0.2, [0.1 * (n % 7), -0.05 * (n % 5), 0.03 * n]) for n in range(60)}
SESSION = {"open": True, "session_id": "s1", "start_ms": T0, "end_ms": T0 + 9, "n_events": 2, "n_late": 0,
           "counts": {"view": 2}, "recent_items": ["i59", "i58"], "categories": {"c1": 2}}
COUNTS = {"counts": {"view": 2, "rating": 1}, "events": 3, "learned": 1}


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


def ranked() -> list[list[Any]]:
    scores = {item: MEAN + USER_BIAS + bias + sum(u * f for u, f in zip(USER_FACTORS, factors, strict=True))
              for item, (bias, factors) in ITEMS.items() if item not in SESSION["recent_items"]}
    return [[item, score] for item, score in sorted(scores.items(), key=lambda pair: -pair[1])][:50]


def seed(writer: RedisWriter, keys: RedisKeys, user: str, fmt: str) -> None:
    """One user and the items, as the job writes them in ``fmt``."""
    factors, recs = {"bias": USER_BIAS, "factors": USER_FACTORS}, {"items": ranked(), "global_mean": MEAN}
    params = {item: {"bias": bias, "factors": f, "version": 3} for item, (bias, f) in ITEMS.items()}
    if fmt == "compact":
        writer.write_batch([
            (keys.user_record(user), T0, CompactValue(encode_user_value(COUNTS, SESSION, factors, recs))),
            *((keys.item_record(item), T0, CompactValue(encode_item_value(p))) for item, p in params.items()),
        ])
    else:
        writer.write_batch([
            (keys.counts(user), T0, COUNTS), (keys.session(user), T0, SESSION),
            (keys.factors(user), T0, factors), (keys.recs(user), T0, recs),
            *((keys.item_params(item), T0, p) for item, p in params.items()),
        ])


def test_both_formats_serve_the_same_items_in_the_same_order(serve: Any, settings: Settings,  # noqa: F811
                                                            redis_url: str) -> None:
    old, new = RedisKeys(f"{settings.redis_prefix}-old"), RedisKeys(f"{settings.redis_prefix}-new")
    with RedisWriter(old, "mf-v1", url=redis_url) as w_old, RedisWriter(new, "mf-v1", url=redis_url) as w_new:
        seed(w_old, old, "u1", "legacy")
        seed(w_new, new, "u1", "compact")
    bodies = {}
    for name, keys in (("old", old), ("new", new)):
        client = serve(redis_prefix=keys.prefix)
        bodies[name] = client.get("/v1/users/u1/recommendations", params={"k": 50, "explain": "true"}).json()
        assert client.get("/v1/users/u1/session").json()["recent_items"] == SESSION["recent_items"]
    old_items, new_items = bodies["old"]["items"], bodies["new"]["items"]
    assert bodies["old"]["source"] == bodies["new"]["source"] == "model" and len(new_items) == 50
    assert [i["item_id"] for i in new_items] == [i["item_id"] for i in old_items]
    assert [i["score"] for i in new_items] == [f32(i["score"]) for i in old_items]
    for item in new_items:  # parts add up to the total; the total is the score at float32 precision
        why = item["explanation"]
        assert why["global_mean"] + why["user_bias"] + why["item_bias"] + why["dot"] == pytest.approx(why["total"])
        assert why["total"] == pytest.approx(item["score"], rel=1e-6) and why["item_params_version"] == 3


def test_format_1_keys_are_read_until_legacy_reads_are_turned_off(serve: Any, settings: Settings,  # noqa: F811
                                                                   redis_url: str) -> None:
    keys = RedisKeys(f"{settings.redis_prefix}-legacy")
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        seed(writer, keys, "u1", "legacy")
    upgraded = serve(redis_prefix=keys.prefix).get("/v1/users/u1/recommendations", params={"k": 3}).json()
    assert upgraded["source"] == "model" and [i["score"] for i in upgraded["items"]] == [s for _, s in ranked()[:3]]
    strict = serve(redis_prefix=keys.prefix, serving_legacy_reads=False)
    assert strict.get("/v1/users/u1/recommendations").json()["source"] == "popularity"


def test_the_write_guard_ttl_and_erasure_hold_for_format_2(redis_url: str, redis_client: Any) -> None:
    keys = RedisKeys(f"guard-{time.time_ns()}")
    value = CompactValue(encode_user_value(COUNTS, {"open": False}, None, None))
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        assert writer.write_batch([(keys.user_record("u1"), T0 + 10, value)]).written == 1
        stale = writer.write_batch([(keys.user_record("u1"), T0 + 9, value)])
        assert (stale.written, stale.skipped_stale) == (0, 1)  # never backwards in event time
        assert writer.write_batch([(keys.user_record("u1"), T0 + 10, value)]).written == 1  # a replay overwrites
        assert event_time_of(redis_client.getrange(keys.user_record("u1"), 0, 8)) == T0 + 10
        writer.write_batch([(keys.user_record("u2"), T0, CompactValue(value.body, expire_ms=60_000))])
        assert 0 < redis_client.pttl(keys.user_record("u2")) <= 60_000
        assert redis_client.ttl(keys.user_record("u1")) == -1
        parts = user_envelopes(redis_client, keys, "u1")
        assert parts[UserKind.COUNTS] is not None and parts[UserKind.COUNTS].payload == COUNTS
        assert parts[UserKind.RECS] is None and parts[UserKind.SESSION].payload == {"open": False}  # type: ignore[union-attr]
        writer.write_batch([(keys.item_record("i1"), T0, CompactValue(encode_item_value(
            {"bias": 0.5, "factors": [0.25], "version": 2})))])
        assert item_envelope(redis_client, keys, "i1").payload == {"bias": 0.5, "factors": [0.25], "version": 2}  # type: ignore[union-attr]
        redis_client.hset(keys.user_record("u3"), "v", "1")
        with pytest.raises(RedisSinkError, match=r"WRONGTYPE|wrong kind"):
            writer.write_batch([(keys.user_record("u3"), T0, value)])
        assert writer.delete_user("u1") == 1 and not redis_client.exists(keys.user_record("u1"))
