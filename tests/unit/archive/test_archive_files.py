"""The archive's layout, digests and files, without services: hours, Flink's committed files, ranges, time order."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archive.digest import HourDigest, differences, digests_by_hour, event_hash
from archive.files import archive_digests, archived_files, claim
from archive.layout import ROW_SCHEMA, ArchivedEvent, hour_of, to_table
from archive.replay import events_in_time_order
from schemas import Event, EventCodec, EventType

HOUR_MS = 3_600_000
T0 = 1_796_400_000_000  # 2026-12-04T16:00:00Z
CODEC = EventCodec()


def write_file(folder: Path, hour: str, name: str, events: list[ArchivedEvent]) -> Path:
    """A committed file as the archive job leaves it (Flink names it, no suffix)."""
    path = folder / f"hour={hour}" / f"part-{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(events), path)
    return path


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


def test_only_committed_files_are_read(tmp_path: Path) -> None:
    events = [archived(1, 10, T0, "alice"), archived(1, 11, T0 + 5, "bob")]
    path = write_file(tmp_path, "2026-12-04T16", "abc-0-0", events)
    # Flink's file still in progress (a checkpoint not yet complete, or a killed job's): hidden, never read.
    (path.parent / ".part-abc-0-1.inprogress.1234").write_bytes(path.read_bytes())
    assert [(hour, p.name) for hour, p in archived_files(tmp_path)] == [("2026-12-04T16", "part-abc-0-0")]
    table = pq.read_table(path)
    assert table.schema.equals(ROW_SCHEMA)
    assert table["raw"].to_pylist() == [e.raw for e in events]
    assert archive_digests(tmp_path)["2026-12-04T16"].count == 2


def test_a_file_archived_twice_shows_in_the_digest(tmp_path: Path) -> None:
    once = archive_digests(tmp_path) if write_file(tmp_path, "h", "a-0-0", [archived(0, 0, T0)]) else {}
    write_file(tmp_path, "h", "b-0-0", [archived(0, 0, T0)])
    assert archive_digests(tmp_path)["h"].count == 2 and archive_digests(tmp_path) != once


def test_an_archive_folder_belongs_to_one_topic_and_group(tmp_path: Path) -> None:
    claim(tmp_path, "events", "pulse-archive")
    claim(tmp_path, "events", "pulse-archive")  # the same archive job again
    with pytest.raises(ValueError, match="by group 'pulse-archive'"):
        claim(tmp_path, "events", "another-group")


def test_digests_can_be_limited_to_offset_ranges(tmp_path: Path) -> None:
    write_file(tmp_path, "h", "a-0-0", [archived(p, i, T0) for p in (0, 1) for i in range(10)])
    assert archive_digests(tmp_path, {0: (3, 7), 1: (0, 10)})["h"].count == 14  # ranges by the rows' partition
    assert archive_digests(tmp_path, {0: (10, 12), 1: (10, 12)}) == {}


def test_replay_order_is_event_time_then_partition_then_offset(tmp_path: Path) -> None:
    late, early = T0 + HOUR_MS + 10, T0 + 10
    write_file(tmp_path, hour_of(early), "x-0-1", [archived(1, 0, early, "c")])
    write_file(tmp_path, hour_of(early), "x-0-0", [archived(0, 0, early + 2, "a"), archived(0, 1, early, "b")])
    write_file(tmp_path, hour_of(late), "x-0-2", [archived(1, 1, late, "d")])
    assert [key for key, _ in events_in_time_order(tmp_path)] == [b"b", b"c", b"a", b"d"]
    assert all(CODEC.decode(raw).user_id == key.decode() for key, raw in events_in_time_order(tmp_path))
