"""The archive's files on disk, as Flink's filesystem connector leaves them: found, claimed and read back.

Flink writes a file under a hidden name (``.part-*.inprogress.*``) and renames it into place
(``part-<uuid>-<subtask>-<n>``, no suffix) when the checkpoint that closed it completes, so only
committed files are visible; each row carries its Kafka partition and offset.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow.parquet as pq

from archive.digest import HourDigest
from archive.layout import HOUR_KEY

#: Which topic and consumer group an archive folder belongs to.
OWNER_FILE = "_archive.json"


def claim(root: Path, topic: str, group: str) -> None:
    """Mark ``root`` as the archive of ``topic`` by ``group``; ValueError if another topic or group wrote it.

    The archive job restores its own checkpoints from ``root`` and the group's offsets are what
    ``verify`` compares with, so one folder belongs to one topic and group.
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


def archived_files(folder: Path) -> Iterator[tuple[str, Path]]:
    """(hour, path) of every committed file under one kind's folder (``<archive>/events``), hour by hour."""
    prefix = f"{HOUR_KEY}="
    for hour in sorted(folder.glob(f"{prefix}*")):
        for path in sorted(hour.glob("part-*")):
            if path.is_file():
                yield hour.name.removeprefix(prefix), path


def archive_digests(folder: Path, ranges: Mapping[int, tuple[int, int]] | None = None) -> dict[str, HourDigest]:
    """Each hour's count and digest of the archived records.

    With ``ranges`` (partition -> first and end offset), only a partition's offsets in that range
    count; a partition not in ``ranges`` counts whole.
    """
    hours: dict[str, HourDigest] = {}
    for hour, path in archived_files(folder):
        table = pq.read_table(path, columns=["partition", "offset", "raw"])
        digest = hours.setdefault(hour, HourDigest())
        for partition, offset, raw in zip(*(table[c].to_pylist() for c in ("partition", "offset", "raw")),
                                          strict=True):
            start, end = (ranges or {}).get(partition, (0, 2**63))
            if start <= offset < end:
                digest.add(raw)
    return {hour: digest for hour, digest in hours.items() if digest.count}
