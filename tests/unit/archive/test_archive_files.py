"""The archive's layout, digests and files, without services: hours, durable writes, re-written ranges, time order."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archive.digest import HourDigest, differences, digests_by_hour, event_hash
from archive.files import archive_digests, archived_files, claim, discard_uncommitted, write_file
from archive.layout import ROW_SCHEMA, ArchivedEvent, hour_of, to_table
from archive.replay import events_in_time_order
from schemas import Event, EventCodec, EventType

HOUR_MS = 3_600_000
T0 = 1_796_400_000_000  # 2026-12-04T16:00:00Z
CODEC = EventCodec()


def archived(partition: int, offset: int, time_ms: int, user: str = "u1") -> ArchivedEvent:
    event = Event(f"e{partition}-{offset}", EventType.CLICK, user, time_ms, item_id="i1")
    return ArchivedEvent(partition, offset, CODEC.encode(event), event)


def test_hours_are_utc_and_split_at_the_hour() -> None:
    assert hour_of(T0) == "2026-12-04T16"
    assert hour_of(T0 - 1) == "2026-12-04T15"
    assert hour_of(T0 + HOUR_MS - 1) == "2026-12-04T16"
    assert hour_of(T0 + 8 * HOUR_MS) == "2026-12-05T00"


def test_digest_ignores_order_but_not_duplicates_or_changes() -> None:
    raws = [archived(0, i, T0).raw for i in range(5)]
    forward = digests_by_hour(("h", raw) for raw in raws)
    backward = digests_by_hour(("h", raw) for raw in reversed(raws))
    assert forward == backward
    assert digests_by_hour(("h", raw) for raw in [*raws, raws[0]]) != forward
    assert digests_by_hour(("h", raw) for raw in [*raws[:4], raws[4] + b"x"])["h"].count == 5
    assert digests_by_hour(("h", raw) for raw in [*raws[:4], raws[4] + b"x"]) != forward
    assert event_hash(raws[0]) != event_hash(raws[1])


def test_differences_name_each_hour_that_differs() -> None:
    same = {"a": HourDigest(1, 5)}
    assert differences(same, dict(same)) == []
    lines = differences({"a": HourDigest(1, 5), "b": HourDigest(2, 6)}, {"a": HourDigest(1, 7)})
    assert [line.split(":")[0] for line in lines] == ["hour a", "hour b"]


def test_rows_keep_raw_bytes_and_decoded_columns(tmp_path: Path) -> None:
    events = [archived(1, 10, T0, "alice"), archived(1, 11, T0 + 5, "bob")]
    path = write_file(tmp_path, "2026-12-04T16", 1, 10, to_table(events))
    assert path == tmp_path / "hour=2026-12-04T16" / "part-1-10.parquet"
    table = pq.read_table(path)
    assert table.schema.equals(ROW_SCHEMA)
    assert table["raw"].to_pylist() == [e.raw for e in events]
    assert table["user_id"].to_pylist() == ["alice", "bob"]
    assert table["type"].to_pylist() == ["click", "click"]
    assert not list(tmp_path.rglob("*.tmp")), "the temporary file is renamed into place"


def test_rewriting_a_range_replaces_it(tmp_path: Path) -> None:
    write_file(tmp_path, "h", 0, 0, to_table([archived(0, 0, T0), archived(0, 1, T0)]))
    write_file(tmp_path, "h", 0, 0, to_table([archived(0, 0, T0), archived(0, 1, T0)]))
    assert archive_digests(tmp_path)["h"].count == 2


def test_files_after_the_committed_offset_are_discarded(tmp_path: Path) -> None:
    write_file(tmp_path, "h1", 0, 0, to_table([archived(0, 0, T0)]))
    write_file(tmp_path, "h1", 0, 1, to_table([archived(0, 1, T0)]))  # a flush that never committed
    write_file(tmp_path, "h2", 0, 2, to_table([archived(0, 2, T0 + HOUR_MS)]))  # ... in another hour too
    write_file(tmp_path, "h2", 1, 5, to_table([archived(1, 5, T0 + HOUR_MS)]))  # another partition: kept
    gone = discard_uncommitted(tmp_path, partition=0, committed=1)
    assert sorted(p.name for p in gone) == ["part-0-1.parquet", "part-0-2.parquet"]
    assert [(hour, partition, first) for hour, partition, first, _ in archived_files(tmp_path)] == [
        ("h1", 0, 0), ("h2", 1, 5)]


def test_an_archive_folder_belongs_to_one_topic_and_group(tmp_path: Path) -> None:
    claim(tmp_path, "events", "pulse-archive")
    claim(tmp_path, "events", "pulse-archive")  # the same archiver again
    with pytest.raises(ValueError, match="by group 'pulse-archive'"):
        claim(tmp_path, "events", "another-group")


def test_digests_can_be_limited_to_offset_ranges(tmp_path: Path) -> None:
    write_file(tmp_path, "h", 0, 0, to_table([archived(0, i, T0) for i in range(10)]))
    assert archive_digests(tmp_path, {0: (3, 7)})["h"].count == 4
    assert archive_digests(tmp_path, {0: (10, 12)}) == {}


def test_replay_order_is_event_time_then_partition_then_offset(tmp_path: Path) -> None:
    late, early = T0 + HOUR_MS + 10, T0 + 10
    write_file(tmp_path, hour_of(early), 0, 0, to_table([archived(0, 0, early + 2, "a"), archived(0, 1, early, "b")]))
    write_file(tmp_path, hour_of(early), 1, 0, to_table([archived(1, 0, early, "c")]))
    write_file(tmp_path, hour_of(late), 1, 1, to_table([archived(1, 1, late, "d")]))
    assert [key for key, _ in events_in_time_order(tmp_path)] == [b"b", b"c", b"a", b"d"]
    assert all(CODEC.decode(raw).user_id == key.decode() for key, raw in events_in_time_order(tmp_path))
