r"""Read MovieLens rating files as :class:`Event` streams (and write rating events as ``u.data``).

Three layouts are told apart by content (the first non-empty line), not by file name:

* ``u.data`` (ML-100K): ``user<TAB>item<TAB>rating<TAB>unix_seconds``, no header;
* ``ratings.csv`` (ML-latest, 20M, 25M, 32M): header ``userId,movieId,rating,timestamp``;
* ``ratings.dat`` (ML-1M, 10M): ``user::item::rating::unix_seconds``.

Every line becomes a ``rating`` event with ``event_id=f"ml-{line_no}"`` (1-based line number
in the file, so ids are stable), ``event_time_ms = seconds * 1000`` and an empty context.
A ``.gz`` name is decompressed on the fly.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "ratings.csv")
>>> _ = open(path, "w").write("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n")
>>> [(e.event_id, e.user_id, e.item_id, e.value, e.event_time_ms) for e in read_movielens(path)]
[('ml-2', '1', '31', 2.5, 1260759144000)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path

from producers.sources._files import existing_file, open_text
from schemas.events import Event, EventType

_FORMATS = {"::": "ratings.dat", "\t": "u.data", ",": "ratings.csv"}


def detect_separator(first_line: str) -> str:
    r"""The field separator a MovieLens file uses, judged from its first non-empty line.

    >>> detect_separator("196\t242\t3\t881250949"), detect_separator("userId,movieId,rating,timestamp")
    ('\t', ',')
    """
    for sep in _FORMATS:
        if sep in first_line:
            return sep
    raise ValueError(f"not a MovieLens ratings line (no '::', tab or comma): {first_line[:80]!r}")


def read_movielens(path: str | Path) -> Iterator[Event]:
    r"""Yield one ``rating`` event per line of a MovieLens ratings file.

    Raises :class:`FileNotFoundError` at once for a missing file, and :class:`ValueError`
    naming the file and line for a malformed line (while iterating).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "u.data")
    >>> _ = open(path, "w").write("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    >>> [(e.event_id, e.type.value, e.user_id, e.item_id, e.value) for e in read_movielens(path)]
    [('ml-1', 'rating', '196', '242', 3.0), ('ml-2', 'rating', '186', '302', 3.0)]
    """
    return _read(existing_file(path))


def _read(path: Path) -> Iterator[Event]:
    rating = EventType.RATING
    sep: str | None = None
    with open_text(path) as lines:
        for line_no, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            if sep is None:
                try:
                    sep = detect_separator(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{line_no}: {exc}") from None
                if line.lower().startswith("user"):  # the ratings.csv header
                    continue
            fields = line.split(sep)
            if len(fields) != 4:
                raise ValueError(
                    f"{path}:{line_no}: expected 4 fields (user, item, rating, timestamp) separated by "
                    f"{sep!r}, got {len(fields)}: {line[:80]!r}"
                )
            user, item, value_text, ts_text = (f.strip() for f in fields)
            try:
                value = float(value_text)
                seconds = int(ts_text)
            except ValueError:
                raise ValueError(
                    f"{path}:{line_no}: rating must be a number and timestamp whole seconds: {line[:80]!r}"
                ) from None
            if not user or not item or not math.isfinite(value):
                raise ValueError(f"{path}:{line_no}: empty user/item id or non-finite rating: {line[:80]!r}")
            yield Event(f"ml-{line_no}", rating, user, seconds * 1000, item, value)


def write_movielens(path: str | Path, events: Iterable[Event]) -> int:
    r"""Write the rating events in MovieLens ``u.data`` format; return how many were written.

    Lines are ``user<TAB>item<TAB>rating<TAB>unix_seconds``; other event types are skipped and
    ids are written as they are (they must not contain whitespace).

    >>> import tempfile, os
    >>> from producers.sources.synthetic import synthetic_ratings
    >>> path = os.path.join(tempfile.mkdtemp(), "u.data")
    >>> write_movielens(path, synthetic_ratings(3, 5, 5, seed=1))
    3
    >>> open(path).read().splitlines()[0].count("\t")
    3
    """
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for e in events:
            if e.type is not EventType.RATING:
                continue
            item = e.item_id or ""
            if e.value is None or not item or any(ch.isspace() for ch in e.user_id + item):
                raise ValueError(f"event {e.event_id} cannot be written as a MovieLens line: {e}")
            out.write(f"{e.user_id}\t{item}\t{e.value:g}\t{e.event_time_ms // 1000}\n")
            written += 1
    return written
