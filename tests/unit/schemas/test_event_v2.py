"""Version 2 of the events schema: block events, both versions on the wire, old readers (ADR 0010)."""

from __future__ import annotations

import io
import json
import marshal
import pickle
from typing import Any

import pytest
from fastavro import schemaless_reader

from schemas import ITEM_EVENT_TYPES, DecodeError, DecodeReason, Event, EventCodec, EventType, LocalRegistry
from schemas.compact_bytes import Reader, type_counts
from schemas.registry import DEFAULT_REGISTRY_FILE, EVENTS_SUBJECT, SCHEMA_DIR, RegisteredSchema, parse

NOW_MS = 1_750_000_000_000
V1_ID, V2_ID = 1, 5

VIEW = Event("e1", EventType.VIEW, "u1", NOW_MS, item_id="i1", context={"segment": "s1"})
BLOCK_ITEM = Event("e2", EventType.BLOCK, "u1", NOW_MS, item_id="i1")
BLOCK_CATEGORY = Event("e3", EventType.BLOCK, "u1", NOW_MS, category="shoes")


def codec(writer_version: int | None = None, registry: LocalRegistry | None = None) -> EventCodec:
    return EventCodec(registry, clock_ms=lambda: NOW_MS, writer_version=writer_version)


def schema_json(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text())
    return loaded


def schema_id(payload: bytes) -> int:
    return int.from_bytes(payload[1:5], "big")


# --- the registry file -------------------------------------------------------------------


def test_registry_ids_are_unique_and_events_has_two_versions() -> None:
    doc = json.loads(DEFAULT_REGISTRY_FILE.read_text())
    ids = [entry["id"] for versions in doc["subjects"].values() for entry in versions]
    assert len(ids) == len(set(ids)), ids
    events = {entry["version"]: (entry["id"], entry["file"]) for entry in doc["subjects"][EVENTS_SUBJECT]}
    assert events == {1: (V1_ID, "event.avsc"), 2: (V2_ID, "event_v2.avsc")}
    registry = LocalRegistry.from_file()
    assert registry.latest(EVENTS_SUBJECT)[0] == V2_ID and registry.version(EVENTS_SUBJECT, 1)[0] == V1_ID
    with pytest.raises(KeyError, match="no version 3"):
        registry.version(EVENTS_SUBJECT, 3)


def test_v2_only_appends_a_symbol_and_adds_a_defaulted_field() -> None:
    v1, v2 = schema_json("event.avsc"), schema_json("event_v2.avsc")
    symbols = {f["name"]: f for f in v1["fields"]}["type"]["type"]["symbols"]
    v2_fields = {f["name"]: f for f in v2["fields"]}
    assert v2_fields["type"]["type"]["symbols"] == [*symbols, "block"]  # appended, none removed or moved
    assert [f["name"] for f in v2["fields"]] == [*(f["name"] for f in v1["fields"]), "category"]
    assert v2_fields["category"]["type"] == ["null", "string"] and v2_fields["category"]["default"] is None
    assert "Version 1." in v1["doc"] and "Version 2" in v2["doc"]
    assert [t.value for t in EventType] == v2_fields["type"]["type"]["symbols"]  # the enum mirrors v2, in order


# --- both versions decode ------------------------------------------------------------------


@pytest.mark.parametrize("version, expected_id", [(1, V1_ID), (2, V2_ID), (None, V2_ID)])
def test_v1_and_v2_bytes_decode_to_the_same_event(version: int | None, expected_id: int) -> None:
    payload = codec(version).encode(VIEW)
    assert payload[0] == 0 and schema_id(payload) == expected_id
    decoded = codec().decode(payload)
    assert decoded == VIEW and decoded.category is None


def test_v1_bytes_lack_the_category_field_and_v2_bytes_carry_it() -> None:
    v1_body, v2_body = codec(1).encode(VIEW)[5:], codec(2).encode(VIEW)[5:]
    assert v2_body == v1_body + b"\x00"  # the null branch of the appended ["null", "string"]


@pytest.mark.parametrize("event", [BLOCK_ITEM, BLOCK_CATEGORY], ids=["item", "category"])
def test_block_events_round_trip_as_v2(event: Event) -> None:
    payload = codec().encode(event)
    assert schema_id(payload) == V2_ID
    assert codec().decode(payload) == event
    assert pickle.loads(pickle.dumps(event)) == event
    assert Event.from_fields(marshal.loads(marshal.dumps(event.to_fields()))) == event  # decode -> user stage


def test_the_v1_writer_refuses_block_events_and_categories() -> None:
    old = codec(1)
    for event in (BLOCK_ITEM, BLOCK_CATEGORY):
        with pytest.raises(ValueError, match=r"version 1 of the events schema .* has no event type 'block'"):
            old.encode(event)
    with pytest.raises(ValueError, match="has no category field"):
        old.encode(Event("e4", EventType.VIEW, "u1", NOW_MS, item_id="i1", category="shoes"))
    assert old.decode(old.encode(VIEW)) == VIEW  # everything else it still writes


def test_an_unknown_writer_version_is_refused_up_front() -> None:
    with pytest.raises(KeyError, match="no version 9"):
        codec(9)


def test_unknown_schema_ids_keep_their_reason() -> None:
    payload = codec().encode(VIEW)
    for unknown in (0, 6, 999):
        with pytest.raises(DecodeError) as err:
            codec().decode(b"\x00" + unknown.to_bytes(4, "big") + payload[5:])
        assert err.value.reason is DecodeReason.UNKNOWN_SCHEMA, unknown


# --- block validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"item_id": None}, DecodeReason.MISSING_FIELD),  # neither an item nor a category
        ({"item_id": None, "category": ""}, DecodeReason.MISSING_FIELD),
        ({"item_id": "", "category": None}, DecodeReason.MISSING_FIELD),
        ({"item_id": "i1", "category": "shoes"}, DecodeReason.BAD_VALUE),  # both
        ({"item_id": None, "category": "sh\x00oes"}, DecodeReason.BAD_ID),
        ({"item_id": None, "category": "c" * 257}, DecodeReason.BAD_ID),
        ({"item_id": None, "category": "\ufeffshoes"}, DecodeReason.BAD_ID),
    ],
)
def test_a_block_names_exactly_one_item_or_category(overrides: dict[str, Any], reason: DecodeReason) -> None:
    fields: dict[str, Any] = {"item_id": "i1", "category": None, **overrides}
    event = Event("e5", EventType.BLOCK, "u1", NOW_MS, item_id=fields["item_id"], category=fields["category"])
    with pytest.raises(DecodeError) as err:
        codec().decode(codec().encode(event))
    assert err.value.reason is reason
    with pytest.raises(DecodeError) as err:  # the checks without the bytes (serving's path) agree
        codec().validate(event)
    assert err.value.reason is reason


@pytest.mark.parametrize("event_type", [t for t in EventType if t is not EventType.BLOCK])
def test_category_on_other_event_types_is_refused(event_type: EventType) -> None:
    event = Event("e6", event_type, "u1", NOW_MS, item_id="i1", category="shoes")
    with pytest.raises(DecodeError) as err:
        codec().validate(event)
    assert err.value.reason is DecodeReason.BAD_VALUE and "only for block events" in err.value.detail


def test_block_is_not_an_item_event_type_nor_learned_from() -> None:
    from online_models.implicit_params import EventWeights
    from online_models.mf_params import EventTargets
    from online_models.popularity import InteractionWeights

    assert EventType.BLOCK not in ITEM_EVENT_TYPES  # a block of a category has no item
    assert EventTargets().target(BLOCK_ITEM) is None
    assert EventWeights().positive(BLOCK_ITEM) == 0.0
    assert InteractionWeights().weight(EventType.BLOCK) == 0.0


def test_block_counts_by_type_keep_the_older_types_codes() -> None:
    out = bytearray()
    type_counts({"view": 3, "erase": 1, "block": 2}, out)
    assert bytes(out) == b"\x03\x00\x03\x06\x01\x07\x02"  # view 0, erase 6 as before; block takes 7
    assert Reader(bytes(out)).type_counts() == {"view": 3, "erase": 1, "block": 2}


# --- an old reader (a job before v2) -------------------------------------------------------


def old_job_registry() -> LocalRegistry:
    """What a job built before v2 knows: ``registry.json`` with only id 1 for the events subject."""
    today = LocalRegistry.from_file()
    subjects = json.loads(DEFAULT_REGISTRY_FILE.read_text())["subjects"]
    return LocalRegistry([e for s in subjects for e in today.versions(s) if e.schema_id != V2_ID])


def test_an_old_job_dead_letters_every_v2_record_as_unknown_schema() -> None:
    old_reader = codec(registry=old_job_registry())
    assert old_reader.reader_id == V1_ID
    assert old_reader.decode(codec(1).encode(VIEW)) == VIEW
    for event in (VIEW, BLOCK_ITEM):
        with pytest.raises(DecodeError) as err:
            old_reader.decode(codec().encode(event))
        assert err.value.reason is DecodeReason.UNKNOWN_SCHEMA  # to the DLQ with the original bytes


def test_a_v1_reader_given_the_v2_writer_schema_fails_only_on_block() -> None:
    # What an old job would do through a Schema Registry (it can fetch id 5): Avro resolution
    # drops the unknown category field but has no symbol for "block" (the enum has no default).
    v1, v2 = parse(schema_json("event.avsc")), parse(schema_json("event_v2.avsc"))
    with pytest.raises(Exception, match="block not found in reader symbol list"):
        schemaless_reader(io.BytesIO(codec().encode(BLOCK_CATEGORY)[5:]), v2, v1)
    knows_v2_reads_v1 = LocalRegistry([RegisteredSchema(V1_ID, EVENTS_SUBJECT, 1, v1),
                                       RegisteredSchema(V2_ID, EVENTS_SUBJECT, 0, v2)])
    old_reader = codec(registry=knows_v2_reads_v1)
    assert old_reader.reader_id == V1_ID
    assert old_reader.decode(codec().encode(VIEW)) == VIEW
    for block in (BLOCK_ITEM, BLOCK_CATEGORY):
        with pytest.raises(DecodeError) as err:
            old_reader.decode(codec().encode(block))
        assert err.value.reason is DecodeReason.INVALID_BODY and "block not found" in err.value.detail


def test_the_registered_schema_text_is_the_same_in_every_process() -> None:
    # A registry comparing text would take v1 from another process (the job) for a new version of
    # the subject and check it against v2, which it fails (ADR 0010).
    import os
    import subprocess
    import sys

    code = ("from schemas.registry import LocalRegistry, schema_text; "
            "print([schema_text(e.parsed) for e in LocalRegistry.from_file().versions('events-value')])")
    texts = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
        for seed in range(6)
    }
    assert len(texts) == 1
