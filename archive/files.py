"""The archive's files on disk: written durably, found by partition and offset, read back.

A file is written to a hidden temporary name, flushed to disk (``fsync``), renamed into place
and its folder flushed too, so after a crash a file is either whole or absent. The archiver
commits its Kafka offsets only after every file of a flush is in place; when a partition is
(re)assigned it deletes the files at or after the committed offset (a flush that crashed before
its commit), which the consumer then reads and writes again: nothing lost, nothing doubled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from archive.digest import HourDigest
from archive.layout import HOUR_KEY, file_name, hour_folder, offsets_of

#: Which topic and consumer group an archive folder belongs to.
OWNER_FILE = "_archive.json"


def write_file(root: Path, hour: str, partition: int, first_offset: int, table: pa.Table) -> Path:
    """Write one hour's rows of one partition durably; its path (an existing file of that range is replaced)."""
    folder = root / hour_folder(hour)
    new_folder = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name(partition, first_offset)
    temporary = folder / f".{path.name}.tmp"
    with temporary.open("wb") as out:
        pq.write_table(table, out, compression="zstd")
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)
    _sync_folder(folder)
    if new_folder:
        _sync_folder(root)
    return path


def claim(root: Path, topic: str, group: str) -> None:
    """Mark ``root`` as the archive of ``topic`` by ``group``; ValueError if another topic or group wrote it.

    Files without a committed offset are deleted on assignment (a first flush that crashed), which
    is only right when the group that wrote them is the one asking.
    """
    marker, owner = root / OWNER_FILE, {"topic": topic, "group": group}
    if marker.exists():
        found = json.loads(marker.read_text())
        if found != owner:
            raise ValueError(f"{root} is the archive of topic {found['topic']!r} by group {found['group']!r}, "
                             f"not of {topic!r} by {group!r}: archive into another folder")
        return
    root.mkdir(parents=True, exist_ok=True)
    temporary = root / f".{OWNER_FILE}.tmp"
    with temporary.open("w") as out:
        json.dump(owner, out)
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(marker)
    _sync_folder(root)


def archived_files(root: Path) -> Iterator[tuple[str, int, int, Path]]:
    """(hour, partition, first offset, path) of every archive file under ``root``."""
    prefix = f"{HOUR_KEY}="
    for folder in sorted(root.glob(f"{prefix}*")):
        for path in sorted(folder.glob("part-*.parquet")):
            found = offsets_of(path.name)
            if found:
                yield folder.name.removeprefix(prefix), found[0], found[1], path


def discard_uncommitted(root: Path, partition: int, committed: int) -> list[Path]:
    """Delete ``partition``'s files from ``committed`` on (written by a flush that never committed)."""
    gone = [path for _, p, first, path in archived_files(root) if p == partition and first >= committed]
    for path in gone:
        path.unlink()
    for folder in {path.parent for path in gone}:
        _sync_folder(folder)
    return gone


def archive_digests(root: Path, ranges: Mapping[int, tuple[int, int]] | None = None) -> dict[str, HourDigest]:
    """Each hour's count and digest of the archived events.

    With ``ranges`` (partition -> first and end offset), only a partition's offsets in that range
    count; a partition not in ``ranges`` counts whole.
    """
    hours: dict[str, HourDigest] = {}
    for hour, partition, _, path in archived_files(root):
        table = pq.read_table(path, columns=["offset", "raw"])
        start, end = (ranges or {}).get(partition, (0, 2**63))
        digest = hours.setdefault(hour, HourDigest())
        for offset, raw in zip(table["offset"].to_pylist(), table["raw"].to_pylist(), strict=True):
            if start <= offset < end:
                digest.add(raw)
    return {hour: digest for hour, digest in hours.items() if digest.count}


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename, a new or deleted file) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
