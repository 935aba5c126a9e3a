"""The served-list record: registered like the event schema, framed, round-trips, and its checks."""

from __future__ import annotations

import json

import pytest

from schemas import DecodeError, DecodeReason, LocalRegistry, ServedItem, ServedList, ServedListCodec
from schemas.registry import DEFAULT_REGISTRY_FILE, SCHEMA_DIR, SERVED_SUBJECT


def served(items: tuple[ServedItem, ...] = (ServedItem("i1", 0, 4.25), ServedItem("i2", 1, -0.5)),
           **update: object) -> ServedList:
    fields: dict[str, object] = {
        "request_id": "0f" * 16, "user_id": "u1", "served_at_ms": 1_700_000_000_123, "surface": "recommendations",
        "source": "model", "policy": "mf", "prefix": "pulse-v2", "model_version": "mf-v1", "experiment": "home",
        "variant": "B", "segment": None, "items": items}
    return ServedList(**{**fields, **update})  # type: ignore[arg-type]


def test_the_served_schema_is_registered_with_its_own_subject_and_id() -> None:
    doc = json.loads(DEFAULT_REGISTRY_FILE.read_text())
    entries = doc["subjects"][SERVED_SUBJECT]
    assert entries == [{"id": 4, "version": 1, "file": "served.avsc"}]
    ids = [e["id"] for versions in doc["subjects"].values() for e in versions]
    assert len(ids) == len(set(ids))  # ids are never reused
    registry = LocalRegistry.from_file()
    schema_id, parsed = registry.latest(SERVED_SUBJECT)
    assert schema_id == 4 and parsed["name"] == "dev.pulse.ServedList"
    assert (SCHEMA_DIR / "served.avsc").exists()


@pytest.mark.parametrize("record", [
    served(),
    served(items=()),
    served(source="popularity", policy="popularity", model_version=None, experiment=None, variant=None, segment="*"),
    served(items=tuple(ServedItem(f"item-{i}", i, 1.0 / (i + 1)) for i in range(1000))),
])
def test_round_trip(record: ServedList) -> None:
    codec = ServedListCodec()
    payload = codec.encode(record)
    assert payload[0] == 0 and int.from_bytes(payload[1:5], "big") == 4  # the Confluent frame, the served id
    assert codec.decode(payload) == record
    assert codec.encode_record(record.to_avro()) == payload


def test_a_record_of_another_subject_is_not_a_served_list() -> None:
    from schemas import Event, EventCodec, EventType

    event = EventCodec().encode(Event("e1", EventType.VIEW, "u1", 1_700_000_000_000, item_id="i1"))
    with pytest.raises(DecodeError) as caught:
        ServedListCodec().decode(event)
    assert caught.value.reason is DecodeReason.INVALID_BODY


@pytest.mark.parametrize(("record", "reason"), [
    (served(items=(ServedItem("i1", 1, 1.0),)), DecodeReason.BAD_VALUE),
    (served(items=(ServedItem("i1", 0, float("nan")),)), DecodeReason.BAD_VALUE),
    (served(user_id=""), DecodeReason.MISSING_FIELD),
    (served(request_id="r\x00"), DecodeReason.BAD_ID),
])
def test_decode_checks(record: ServedList, reason: DecodeReason) -> None:
    codec = ServedListCodec()
    with pytest.raises(DecodeError) as caught:
        codec.decode(codec.encode(record))
    assert caught.value.reason is reason


def test_truncated_payload() -> None:
    codec = ServedListCodec()
    with pytest.raises(DecodeError) as caught:
        codec.decode(codec.encode(served())[:-3])
    assert caught.value.reason is DecodeReason.TRUNCATED


def _head(record: ServedList) -> tuple[object, ...]:
    return (record.request_id, record.user_id, record.served_at_ms, record.surface, record.source, record.policy,
            record.prefix, record.model_version, record.experiment, record.variant, record.segment)


@pytest.mark.parametrize("record", [
    served(),
    served(items=()),
    served(user_id="ü-😀", model_version=None, experiment=None, variant=None, segment="men", served_at_ms=2**62),
    served(items=tuple(ServedItem(f"item-{i}" * (i % 5 + 1), i, (-1.5) ** i) for i in range(300))),
])
def test_the_hot_path_writer_writes_fastavros_bytes(record: ServedList) -> None:
    """``encode_answer`` (hand-written for version 1) is byte for byte fastavro's ``encode``, and decodes."""
    codec = ServedListCodec()
    assert codec.writes_v1
    items = [{"item_id": i.item_id, "score": i.score, "explanation": None} for i in record.items]
    payload = codec.encode_answer(_head(record), items)
    assert payload == codec.encode(record)
    assert codec.decode(payload) == record


def test_a_newer_schema_version_is_written_by_fastavro() -> None:
    schema = json.loads((SCHEMA_DIR / "served.avsc").read_text())
    schema["fields"].append({"name": "page", "type": ["null", "string"], "default": None})
    registry = LocalRegistry.from_file().with_schema(SERVED_SUBJECT, 99, 2, schema)
    codec = ServedListCodec(registry)
    assert not codec.writes_v1
    record = served()
    payload = codec.encode_answer(_head(record), [{"item_id": i.item_id, "score": i.score} for i in record.items])
    assert int.from_bytes(payload[1:5], "big") == 99 and codec.decode(payload) == record
