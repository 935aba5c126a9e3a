"""Format 2 (schemas/redis_values.py): every payload the job writes comes back as format 1 held it,
floats at float32 precision, and a value that is not format 2 is refused with a clear error."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.redis_keys import Envelope, UserKind
from schemas.redis_values import (
    decode_header,
    decode_item_value,
    decode_user_value,
    encode_item_value,
    encode_user_value,
    is_compact,
    with_header,
)

T, W = 1_700_000_000_000, 1_700_000_000_250


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


item_ids = st.one_of(
    st.builds(lambda n: f"i{n}", st.integers(0, 70_000)),
    st.builds(str, st.integers(0, 5_000_000)),
    st.text(min_size=1, max_size=12),
)
floats = st.floats(-1e6, 1e6, allow_nan=False, width=32)
counts = st.dictionaries(st.sampled_from(["view", "click", "add_to_cart", "purchase", "rating"]), st.integers(0, 10**9))
sessions = st.one_of(
    st.just({"open": False}),
    st.fixed_dictionaries({
        "open": st.just(True), "session_id": st.text(min_size=1, max_size=20),
        "start_ms": st.integers(0, 2**50), "end_ms": st.just(0), "n_events": st.integers(0, 10**6),
        "n_late": st.integers(0, 100), "counts": counts,
        "recent_items": st.lists(item_ids, max_size=20, unique=True),
        "categories": st.dictionaries(st.text(min_size=1, max_size=8), st.integers(0, 1000)),
    }),
)


@given(
    counts=counts, learned=st.integers(0, 10**9), session=sessions,
    ranked=st.lists(st.tuples(item_ids, floats), max_size=50),
    factors=st.lists(floats, min_size=1, max_size=32), bias=floats, mean=floats, top=st.integers(0, 60),
    history=st.lists(item_ids, max_size=20, unique=True),
)
def test_every_user_payload_round_trips_at_float32_precision(counts, learned, session, ranked, factors, bias, mean,
                                                            top, history):
    if session.get("open"):
        session = {**session, "end_ms": session["start_ms"] + 1234}
    if history:  # the items of the user's closed sessions, open session or not
        session = {**session, "history": history}
    counts_payload = {"counts": counts, "events": sum(counts.values()), "learned": learned}
    recs = {"items": [[item, score] for item, score in ranked], "global_mean": mean}
    body = encode_user_value(counts_payload, session, {"bias": bias, "factors": factors}, recs)
    value = decode_user_value(with_header(body, T, W, "mf-v1"))
    assert (value.event_time_ms, value.write_time_ms, value.model_version) == (T, W, "mf-v1")
    assert value.payload(UserKind.COUNTS) == counts_payload
    assert value.payload(UserKind.SESSION) == session
    assert value.payload(UserKind.FACTORS) == {"bias": f32(bias), "factors": [f32(x) for x in factors]}
    assert value.payload(UserKind.RECS) == {"items": [[i, f32(s)] for i, s in ranked], "global_mean": f32(mean)}
    # Serving's top-k read decodes only the head: enough for `top` items outside the session.
    head = decode_user_value(with_header(body, T, W, "mf-v1"), top).payload(UserKind.RECS)["items"]
    assert head == value.payload(UserKind.RECS)["items"][:top + len(session.get("recent_items", []))]


def test_a_user_without_factors_has_counts_and_session_only():
    body = encode_user_value({"counts": {"view": 1}, "learned": 0}, {"open": False}, None, None)
    value = decode_user_value(with_header(body, T, W, "m"))
    assert set(value.parts) == {UserKind.COUNTS, UserKind.SESSION}
    assert value.envelope(UserKind.RECS) is None
    assert value.envelope("counts") == Envelope({"counts": {"view": 1}, "events": 1, "learned": 0}, T, W, "m")


def test_numbered_item_ids_cost_two_bytes_each_and_others_stay_exact():
    numbered = [[f"i{n}", 1.0] for n in range(50)]
    mixed = [[f"item-{n}", 1.0] for n in range(50)]
    size = len(encode_user_value({}, {"open": False}, None, {"items": numbered, "global_mean": 0.0}))
    assert size <= 1 + 2 + 4 + 1 + 1 + 2 + 2 * 50 + 4 * 50
    for ranked in (numbered, mixed, [["i007", 1.0], ["i7", 2.0]], [["", 1.0], ["0", 2.0]]):
        body = encode_user_value({}, {"open": False}, None, {"items": ranked, "global_mean": 0.0})
        assert decode_user_value(with_header(body, T, W, "m")).payload("recs")["items"] == ranked


def test_numpy_factors_are_stored_as_float32():
    body = encode_item_value({"bias": np.float64(0.1), "factors": np.array([0.1, -0.2, 0.3]), "version": 9})
    payload = decode_item_value(with_header(body, T, W, "m")).payload
    assert payload == {"bias": f32(0.1), "factors": [f32(0.1), f32(-0.2), f32(0.3)], "version": 9}


def test_the_event_time_is_the_eight_bytes_after_the_format_byte():
    value = with_header(b"", T, W, "m")
    assert value[0] == 2 and int.from_bytes(value[1:9], "big") == T  # what the writer's Lua guard reads
    assert decode_header(value)[:3] == (T, W, "m")


@pytest.mark.parametrize("data", [b'{"items": []}', b"", b"\x02short", b"\x02" + bytes(8) + b"\xff"])
def test_a_value_that_is_not_format_2_is_refused(data):
    with pytest.raises(ValueError, match="format-2"):
        decode_user_value(data)
    assert not is_compact(data) or len(data) > 9
