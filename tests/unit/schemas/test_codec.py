"""The framed Avro codec: round trips, evolution, and 1,000 malformed payloads per reason."""

from __future__ import annotations

import contextlib
import io
import json
import marshal
import random
import struct
import time
from collections.abc import Callable

import pytest
from fastavro import schemaless_writer

from schemas import Decision, DecodeError, DecodeReason, Event, EventCodec, EventType, Item, ItemCodec, LocalRegistry
from schemas.registry import EVENTS_SUBJECT, SCHEMA_DIR

NOW_MS = 1_750_000_000_000
N_BAD = 1000


def make_event(i: int = 0, **overrides: object) -> Event:
    fields: dict[str, object] = {
        "event_id": f"e-{i}",
        "type": EventType.IMPRESSION,
        "user_id": f"user-{i % 97}",
        "event_time_ms": NOW_MS - i,
        "item_id": f"item-{i % 13}",
        "value": None,
        "context": {"segment": "s1", "position": str(i % 3)},
        "decision": Decision(f"req-{i}", "ts", f"item-{i % 13}", 0.25),
    }
    fields.update(overrides)
    return Event(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec(clock_ms=lambda: NOW_MS)


def raw_payload(codec: EventCodec, record: dict[str, object]) -> bytes:
    """Frame a record without the Event dataclass (to build invalid-but-encodable events)."""
    return codec._frame(record)


def test_every_event_type_round_trips(codec: EventCodec) -> None:
    for i, event_type in enumerate(EventType):
        needs_decision = event_type is EventType.IMPRESSION
        event = make_event(
            i,
            type=event_type,
            value=4.5 if event_type is EventType.RATING else None,
            decision=make_event(i).decision if needs_decision else None,
            item_id=None if event_type is EventType.ERASE else f"item-{i}",
        )
        payload = codec.encode(event)
        assert codec.decode(payload) == event
        # The job passes an event on as its plain fields, marshalled (flink_jobs.messages.event_bytes).
        fields = codec.decode_fields(payload)
        assert fields == event.to_fields()
        assert Event.from_fields(marshal.loads(marshal.dumps(fields))) == event


def test_unicode_ids_round_trip(codec: EventCodec) -> None:
    event = make_event(1, user_id="ユーザー-😀-\u200d", item_id="Ω-𝔸")
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize("bom", ["\ufeff", "\ufffe"], ids=["feff", "fffe"])
def test_a_leading_byte_order_mark_is_a_bad_id(codec: EventCodec, bom: str) -> None:
    # PyFlink hands keys back to Python via UTF-16 decoding, which drops a leading BOM.
    for overrides in ({"user_id": f"{bom}u1"}, {"item_id": bom}, {"context": {"segment": f"{bom}s"}}):
        with pytest.raises(DecodeError) as err:
            codec.decode(codec.encode(make_event(1, **overrides)))
        assert err.value.reason is DecodeReason.BAD_ID, overrides
    assert codec.decode(codec.encode(make_event(1, user_id=f"u{bom}1"))).user_id == f"u{bom}1"  # not first: fine


def test_items_round_trip() -> None:
    codec = ItemCodec()
    item = Item("i1", updated_ms=NOW_MS, category="shoes", attributes={"brand": "x"})
    assert codec.decode(codec.encode(item)) == item
    assert codec.encode(item)[1:5] != EventCodec().encode(make_event())[1:5]  # own schema id


def test_a_future_v3_reader_reads_v1_and_v2_records() -> None:
    v2 = json.loads((SCHEMA_DIR / "event_v2.avsc").read_text())
    v3 = json.loads(json.dumps(v2))
    v3["fields"].append({"name": "session_id", "type": ["null", "string"], "default": None})
    v3["doc"] = "Version 3: adds session_id."
    registry = LocalRegistry.from_file().with_schema(EVENTS_SUBJECT, schema_id=100, version=3, schema=v3)
    new_reader = EventCodec(registry, clock_ms=lambda: NOW_MS)
    assert new_reader.schema_id == new_reader.reader_id == 100
    event = make_event(5)
    for version, schema_id in ((1, 1), (2, 5)):
        payload = EventCodec(writer_version=version, clock_ms=lambda: NOW_MS).encode(event)
        assert payload[1:5] == schema_id.to_bytes(4, "big")
        assert new_reader.decode(payload) == event  # old bytes, read through the v3 schema
    assert new_reader.decode(new_reader.encode(event)) == event


def test_decode_error_pickles() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(DecodeError(DecodeReason.TRUNCATED, "x")))
    assert err.reason is DecodeReason.TRUNCATED and err.detail == "x"


# --- 1,000 malformed payloads per reason -------------------------------------------------


def bad_truncated(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    payload = codec.encode(make_event(i))
    return payload[: rng.randrange(0, len(payload))]


def bad_magic(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    payload = codec.encode(make_event(i))
    return bytes([rng.randrange(1, 256)]) + payload[1:]


def bad_unknown_schema(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    payload = codec.encode(make_event(i))
    return b"\x00" + rng.randrange(1000, 2**32).to_bytes(4, "big") + payload[5:]


def bad_invalid_body(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    payload = codec.encode(make_event(i))
    kind = i % 3
    if kind == 0:  # trailing garbage after a complete record
        return payload + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
    if kind == 1:  # enum index far outside EventType: zigzag varint of 40..60 as `type`
        body = io.BytesIO()
        body.write(codec._header)
        schemaless_writer(body, {"type": "string"}, f"e-{i}")
        body.write(bytes([2 * rng.randrange(40, 60)]))
        return body.getvalue() + payload[5:]
    # a string that is not UTF-8 as the event id
    junk = bytes([0xFF, 0xFE, rng.randrange(0x80, 0xC0)])
    return codec._header + bytes([2 * len(junk)]) + junk + payload[5 + 1 + len(f"e-{i}") :]


def bad_missing_field(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    event = make_event(i)
    variants = [
        make_event(i, user_id=""),
        make_event(i, event_id=""),
        make_event(i, type=EventType.CLICK, item_id=None, decision=None),
        make_event(i, decision=None),  # impression without its decision
        make_event(i, type=EventType.RATING, value=None, decision=None),
        make_event(i, type=EventType.BLOCK, item_id=None, decision=None),  # a block of nothing
        make_event(i, type=EventType.BLOCK, item_id=None, category="", decision=None),
    ]
    return codec.encode(variants[i % len(variants)] if event else event)


def bad_timestamp(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    # Future relative to the wall clock too, so a job decoding with real time rejects them as well.
    future_base = max(NOW_MS, time.time_ns() // 1_000_000)
    far = [rng.randrange(-(2**40), 631_152_000_000), future_base + rng.randrange(2 * 86_400_000, 2**50)]
    return codec.encode(make_event(i, event_time_ms=far[i % 2]))


def bad_too_large(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    return codec.encode(make_event(i, context={"blob": "x" * (64 * 1024 + rng.randrange(1, 10_000))}))


def bad_id(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    variants = [
        make_event(i, user_id=f"user\x00{i}"),
        make_event(i, item_id=f"item\n{i}"),
        make_event(i, user_id="u" * rng.randrange(257, 2000)),
        make_event(i, type=EventType.BLOCK, item_id=None, category=f"cat\x01{i}", decision=None),
    ]
    return codec.encode(variants[i % len(variants)])


def bad_value(codec: EventCodec, rng: random.Random, i: int) -> bytes:
    variants = [
        make_event(i, value=float("nan")),
        make_event(i, value=float("inf")),
        make_event(i, decision=Decision(f"r{i}", "ts", "a", rng.choice([0.0, -0.5, 1.5]))),
        make_event(i, type=EventType.BLOCK, category=f"cat-{i}", decision=None),  # an item and a category
        make_event(i, category=f"cat-{i}"),  # category on an impression
    ]
    return codec.encode(variants[i % len(variants)])


MALFORMED: dict[DecodeReason, Callable[[EventCodec, random.Random, int], bytes]] = {
    DecodeReason.TRUNCATED: bad_truncated,
    DecodeReason.BAD_MAGIC: bad_magic,
    DecodeReason.UNKNOWN_SCHEMA: bad_unknown_schema,
    DecodeReason.INVALID_BODY: bad_invalid_body,
    DecodeReason.MISSING_FIELD: bad_missing_field,
    DecodeReason.BAD_TIMESTAMP: bad_timestamp,
    DecodeReason.TOO_LARGE: bad_too_large,
    DecodeReason.BAD_ID: bad_id,
    DecodeReason.BAD_VALUE: bad_value,
}


def test_every_reason_has_a_generator() -> None:
    assert set(MALFORMED) == set(DecodeReason)


@pytest.mark.parametrize("reason", list(MALFORMED), ids=lambda r: r.value)
def test_thousand_malformed_payloads_raise_the_specific_reason(codec: EventCodec, reason: DecodeReason) -> None:
    rng = random.Random(reason.value)
    wrong: list[str] = []
    for i in range(N_BAD):
        payload = MALFORMED[reason](codec, rng, i)
        try:
            codec.decode(payload)
        except DecodeError as err:
            if err.reason is not reason:
                wrong.append(f"#{i}: {err}")
        else:
            wrong.append(f"#{i}: decoded without error")
    assert not wrong, f"{len(wrong)} of {N_BAD} gave the wrong outcome, e.g. {wrong[:3]}"


def test_random_bytes_never_crash(codec: EventCodec) -> None:
    rng = random.Random(3)
    for n in range(2000):
        payload = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 120)))
        if n % 2:
            payload = codec._header + payload
        with contextlib.suppress(DecodeError):
            codec.decode(payload)


def test_double_field_struct_is_little_endian_ieee(codec: EventCodec) -> None:
    # Guards the assumption the invalid-body generator makes about the frame layout.
    payload = codec.encode(make_event(0, type=EventType.RATING, value=2.5, decision=None))
    assert struct.pack("<d", 2.5) in payload
