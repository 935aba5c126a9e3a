from __future__ import annotations

import gzip
import os
from pathlib import Path

import orjson
import pytest

from producers.sources.jsonl import read_jsonl, write_jsonl
from producers.sources.synthetic import SyntheticConfig, synthetic_events
from schemas.codec import EventCodec
from schemas.events import Decision, Event, EventType

OTTO_LINE = {
    "session": 42,
    "events": [
        {"aid": 1517085, "ts": 1659304800025, "type": "clicks"},
        {"aid": 1563459, "ts": 1659304904511, "type": "carts"},
        {"aid": 1563459, "ts": 1659304904999, "type": "orders"},
    ],
}


def _write_lines(path: Path, objs: list[object]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs))
    return path


def test_otto_session_line(tmp_path: Path) -> None:
    events = list(read_jsonl(_write_lines(tmp_path / "otto.jsonl", [OTTO_LINE])))
    assert events == [
        Event("otto-42-0", EventType.CLICK, "otto-42", 1659304800025, "1517085"),
        Event("otto-42-1", EventType.ADD_TO_CART, "otto-42", 1659304904511, "1563459"),
        Event("otto-42-2", EventType.PURCHASE, "otto-42", 1659304904999, "1563459"),
    ]


def test_pulse_events_round_trip_including_decisions(tmp_path: Path) -> None:
    events = list(synthetic_events(SyntheticConfig(seed=3, n_users=100, n_items=300), limit=2_000))
    assert any(e.decision is not None for e in events)
    path = tmp_path / "events.jsonl"
    assert write_jsonl(path, events) == len(events)
    assert list(read_jsonl(path)) == events


def test_gzip_round_trip(tmp_path: Path) -> None:
    e = Event("e1", EventType.IMPRESSION, "u1", 1, "i1", decision=Decision("r1", "p", "i1", 0.25))
    path = tmp_path / "events.jsonl.gz"
    write_jsonl(path, [e])
    with gzip.open(path) as raw:
        assert orjson.loads(raw.readline())["decision"]["propensity"] == 0.25
    assert list(read_jsonl(path)) == [e]


def test_mixed_shapes_blank_lines_and_int_values(tmp_path: Path) -> None:
    pulse = {
        "event_id": "e9",
        "type": "rating",
        "user_id": "u1",
        "item_id": "i2",
        "value": 4,
        "event_time_ms": 1_700_000_000_000,
    }
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(orjson.dumps(pulse) + b"\n\n" + orjson.dumps(OTTO_LINE) + b"\n")
    events = list(read_jsonl(path))
    assert [e.event_id for e in events] == ["e9", "otto-42-0", "otto-42-1", "otto-42-2"]
    assert events[0].value == 4.0 and isinstance(events[0].value, float)
    assert events[0].context == {} and events[0].decision is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "unexpected|expected|invalid"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"hello": 1}', "neither a Pulse event"),
        (b'{"event_id": "e1", "type": "teleport", "user_id": "u", "event_time_ms": 1}', "unknown event type"),
        (b'{"event_id": "e1", "type": "view", "event_time_ms": 1}', "without 'user_id'"),
        (b'{"event_id": "e1", "type": "view", "user_id": "u", "event_time_ms": "soon"}', "event_time_ms"),
        (b'{"event_id": "e1", "type": "view", "user_id": "u", "event_time_ms": 1, "context": {"a": 1}}', "context"),
        (
            b'{"event_id": "e1", "type": "impression", "user_id": "u", "event_time_ms": 1, "decision": {}}',
            "decision needs",
        ),
        (b'{"session": 1, "events": [{"aid": 1, "ts": 2, "type": "likes"}]}', "OTTO event 0"),
        (b'{"session": 1, "events": 3}', "must be a list"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(orjson.dumps(OTTO_LINE) + b"\n" + line + b"\n")
    with pytest.raises(ValueError, match=message) as info:
        list(read_jsonl(path))
    assert f"{path}:2:" in str(info.value)


def test_missing_file_fails_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.jsonl"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_otto_sample_from_shared_data(shared_data: Path) -> None:
    path = shared_data / "otto" / "sample.jsonl"
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the OTTO sample at {path}")
        pytest.skip(f"OTTO sample {path} is not on this machine (set PULSE_SHARED_DATA)")
    events = list(read_jsonl(path))
    assert len(events) == 862
    assert len({e.user_id for e in events}) == 20
    assert len({e.event_id for e in events}) == 862
    assert {e.type for e in events} <= {EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE}
    by_user: dict[str, list[int]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e.event_time_ms)
    assert all(ts == sorted(ts) for ts in by_user.values())
    codec = EventCodec()
    for e in events:
        assert codec.decode(codec.encode(e), now_ms=1_700_000_000_000) == e
