"""The Redis key scheme and envelope, without Redis."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from redis.crc import key_slot

from schemas.redis_keys import Envelope, RedisKeys, UserKind, decode_payload, encode_payload

AWKWARD_IDS = [
    "u1", "u:1", "u1:recs", "u", "u:", ":u", "{u1}", "u}1", "}u", "u{", "{", "}", "%7B", "%", "%25",
    "u 1", " u1", "u1 ", "ünïcødé", "用户", "🙂", "a}:recs", "a", "a%7D:recs",
]


def hash_tag(key: str) -> str | None:
    """Redis Cluster's rule: text between the first '{' and the next '}', when not empty."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1:end]


def test_layout_of_every_key() -> None:
    keys = RedisKeys("pulse")
    assert keys.recs("u1") == "pulse:user:{u1}:recs"
    assert keys.session("u1") == "pulse:user:{u1}:session"
    assert keys.counts("u1") == "pulse:user:{u1}:counts"
    assert keys.factors("u1") == "pulse:user:{u1}:factors"
    assert keys.item_params("i1") == "pulse:item:{i1}:params"
    assert keys.bandit("linucb", "home") == "pulse:bandit:linucb:home"
    assert keys.popularity("mobile") == "pulse:popularity:mobile"
    assert keys.model("mf") == "pulse:model:mf"
    assert RedisKeys().prefix == "pulse"


def test_user_keys_cover_every_kind() -> None:
    keys = RedisKeys("p")
    assert keys.user_keys("u1") == [keys.user_record("u1"), *(keys.user("u1", kind) for kind in UserKind),
                                    keys.blocks("u1"), keys.blocked_categories("u1")]
    assert len(set(keys.user_keys("u1"))) == len(UserKind) + 3 == 7


def test_awkward_user_ids_give_distinct_keys() -> None:
    keys = RedisKeys("pulse")
    built = [keys.user(user_id, kind) for user_id, kind in itertools.product(AWKWARD_IDS, UserKind)]
    assert len(set(built)) == len(built)
    items = [keys.item_params(item_id) for item_id in AWKWARD_IDS]
    assert len(set(items)) == len(items)
    assert not set(built) & set(items)


@pytest.mark.parametrize("user_id", AWKWARD_IDS)
def test_all_keys_of_a_user_share_one_hash_tag_and_slot(user_id: str) -> None:
    keys = RedisKeys("pulse")
    user_keys = keys.user_keys(user_id)
    tags = {hash_tag(key) for key in user_keys}
    assert len(tags) == 1 and None not in tags  # a real (non-empty) tag, the same for every kind
    assert len({key_slot(key.encode()) for key in user_keys}) == 1
    assert hash_tag(keys.item_params(user_id)) is not None


def test_braces_in_ids_never_move_the_hash_tag() -> None:
    keys = RedisKeys("pulse")
    assert hash_tag(keys.recs("a}b")) == "a%7Db"
    assert hash_tag(keys.recs("a}b")) != hash_tag(keys.recs("a}c"))
    # No hash tag sneaks into keys that must not have one.
    assert hash_tag(keys.bandit("p{x}", "s{y}")) is None
    assert hash_tag(keys.popularity("{seg}")) is None
    assert hash_tag(keys.model("{m}")) is None


def test_bandit_policy_with_colon_is_unambiguous() -> None:
    keys = RedisKeys("pulse")
    assert keys.bandit("a:b", "c") != keys.bandit("a", "b:c")


def test_unicode_and_spaces_are_kept_readable() -> None:
    keys = RedisKeys("pulse")
    assert keys.session("用户 1") == "pulse:user:{用户 1}:session"
    # Distinct Unicode spellings stay distinct: ids are opaque, never normalized.
    assert keys.recs("e\u0301") != keys.recs("\u00e9")


@pytest.mark.parametrize("prefix", ["", "{pulse}", "pu lse", "pulse:", ":pulse", "pu*", "pu?", "pu[x]", "a::b"])
def test_bad_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        RedisKeys(prefix)


def test_good_prefixes() -> None:
    assert RedisKeys("pulse-test-1a2b").pattern() == "pulse-test-1a2b:*"
    assert RedisKeys("env.prod:pulse").model("mf") == "env.prod:pulse:model:mf"


def test_bad_ids_are_rejected() -> None:
    keys = RedisKeys()
    with pytest.raises(ValueError, match="user_id must not be empty"):
        keys.recs("")
    with pytest.raises(TypeError, match="user_id must be a str"):
        keys.recs(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="surrogate"):
        keys.recs("\udc80")
    with pytest.raises(ValueError):
        keys.user("u1", "nope")


def test_keys_are_frozen() -> None:
    keys = RedisKeys("p")
    with pytest.raises(AttributeError):
        keys.prefix = "q"  # type: ignore[misc]


def test_envelope_round_trip_bytes_and_str() -> None:
    payload = {"items": ["i1", "i2"], "scores": [0.9, 0.25], "k": 2, "nested": {"ü": None, "t": True}}
    env = Envelope(payload, 1_700_000_000_123, 1_700_000_000_456, "mf-3")
    fields = env.to_fields()
    assert set(fields) == {"v", "et", "wt", "mv"}
    assert all(isinstance(value, bytes) for value in fields.values())
    as_bytes = {name.encode(): value for name, value in fields.items()}
    as_str = {name: value.decode() for name, value in fields.items()}
    assert Envelope.from_fields(as_bytes) == env
    assert Envelope.from_fields(as_str) == env


def test_envelope_numpy_payload_comes_back_as_lists() -> None:
    factors = np.array([0.5, -1.25, 2.0], dtype=np.float64)
    env = Envelope({"bias": np.float64(0.1), "factors": factors}, 1, 2, "v")
    back = Envelope.from_fields(env.to_fields())
    assert back.payload == {"bias": 0.1, "factors": [0.5, -1.25, 2.0]}
    assert decode_payload(encode_payload(factors.astype(np.float32))) == [0.5, -1.25, 2.0]


def test_envelope_rejects_non_int_times() -> None:
    with pytest.raises(TypeError, match="event_time_ms"):
        Envelope({}, 1.5, 2, "v").to_fields()  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="write_time_ms"):
        Envelope({}, 1, True, "v").to_fields()


def test_not_an_envelope() -> None:
    assert Envelope.from_fields_or_none({}) is None
    with pytest.raises(ValueError, match="missing field"):
        Envelope.from_fields({b"v": b"1", b"et": b"1"})
    with pytest.raises(ValueError, match="not a Pulse envelope"):
        Envelope.from_fields({b"v": b"{not json", b"et": b"1", b"wt": b"2", b"mv": b"x"})
    with pytest.raises(ValueError, match="not a Pulse envelope"):
        Envelope.from_fields({b"v": b"1", b"et": b"soon", b"wt": b"2", b"mv": b"x"})
