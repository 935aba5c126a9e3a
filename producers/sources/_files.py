"""File helpers shared by the file-backed sources: eager existence checks and ``.gz`` support."""

from __future__ import annotations

import errno
import gzip
from pathlib import Path
from typing import IO, cast


def existing_file(path: str | Path) -> Path:
    """Return ``path`` as a :class:`Path`, or raise :class:`FileNotFoundError` naming it.

    Sources call this before returning their (lazy) iterator so a wrong path fails at once.

    >>> existing_file("/no/such/file")
    Traceback (most recent call last):
    ...
    FileNotFoundError: [Errno 2] No such file: '/no/such/file'
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, "No such file", str(p))
    return p


def open_binary(path: Path) -> IO[bytes]:
    """Open for reading bytes, decompressing transparently when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def open_text(path: Path) -> IO[str]:
    """Open for reading UTF-8 text, decompressing transparently when the name ends in ``.gz``."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")
