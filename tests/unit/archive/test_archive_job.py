"""The archive job without Flink: how records become rows or dead letters, its SQL, what it restores from."""

from __future__ import annotations

import os
import re
from pathlib import Path

from archive.job import latest_snapshot, statements
from archive.layout import ROW_SCHEMA
from archive.rows import EVENTS, SERVED, RecordDecoder
from config import Settings
from schemas import DeadLetterCodec, Event, EventCodec, EventType, ServedItem, ServedList, ServedListCodec

T0 = 1_796_400_000_000  # 2026-12-04T16:00:00Z


def test_an_event_becomes_its_columns_and_hour() -> None:
    raw = EventCodec().encode(Event("e1", EventType.RATING, "u1", T0 + 5, item_id="i1", value=4.0))
    assert RecordDecoder(EVENTS, "events").decode(raw, 2, 9) == (
        T0 + 5, "e1", "rating", "u1", "i1", 4.0, "2026-12-04T16", None)


def test_a_served_list_becomes_its_columns_and_hour() -> None:
    served = ServedList("r1", "u1", T0 - 1, "recommendations", "mf", "mf", "pulse", "v3", "exp", "B", None,
                        (ServedItem("i1", 0, 0.5), ServedItem("i2", 1, 0.25)))
    row = RecordDecoder(SERVED, "served").decode(ServedListCodec().encode(served), 0, 0)
    assert row[:3] == (T0 - 1, "r1", "u1") and row[8:10] == ("exp", "B")
    assert row[11] == [("i1", 0, 0.5), ("i2", 1, 0.25)]
    assert row[-2:] == ("2026-12-04T15", None)


def test_a_record_that_does_not_decode_becomes_a_dead_letter_with_its_bytes() -> None:
    row = RecordDecoder(EVENTS, "events").decode(b"\x07junk", 1, 42)
    assert row[:-1] == (None,) * (len(EVENTS.columns) + 1)
    letter = DeadLetterCodec().decode(row[-1])
    assert (letter["original"], letter["source_topic"], letter["source_partition"], letter["source_offset"]) == (
        b"\x07junk", "events", 1, 42)
    assert letter["detail"].startswith("archive: ")


def test_the_job_writes_the_columns_readers_expect() -> None:
    ddl, inserts = statements(Settings(), Path("/archive"))
    files = next(s for s in ddl if s.startswith("CREATE TABLE events_files"))
    columns = re.findall(r"`(\w+)` [A-Z]", files.split(") PARTITIONED")[0])
    assert columns == [*ROW_SCHEMA.names, "hour"]
    assert "'path' = 'file:///archive/served'" in next(s for s in ddl if s.startswith("CREATE TABLE served_files"))
    assert sum(s.startswith("INSERT INTO dead_letters") for s in inserts) == 2  # both topics' dead letters


def test_a_restart_restores_the_newest_checkpoint_or_savepoint(tmp_path: Path) -> None:
    assert latest_snapshot(tmp_path) is None
    older = tmp_path / "_flink" / "checkpoints" / "job-a" / "chk-7"
    newer = tmp_path / "_flink" / "savepoints" / "savepoint-1"
    unfinished = tmp_path / "_flink" / "checkpoints" / "job-b" / "chk-9"  # no _metadata: never completed
    for n, folder in enumerate((older, newer)):
        folder.mkdir(parents=True)
        (folder / "_metadata").write_bytes(b"")
        os.utime(folder / "_metadata", (1_000 + n, 1_000 + n))
    unfinished.mkdir(parents=True)
    assert latest_snapshot(tmp_path) == newer
    later = newer.stat().st_mtime + 60  # files deleted in an older checkpoint's folder do not make it newer
    os.utime(older, (later, later))
    assert latest_snapshot(tmp_path) == newer
