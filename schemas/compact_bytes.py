r"""The byte-level pieces of Redis format 2 (:mod:`schemas.redis_values`). Pure.

Writers append varints, texts, counts, float32 lists, item-id lists and exact top-k scores to a
``bytearray``; the :class:`Reader` takes them apart in the same order.

>>> out = bytearray()
>>> ids(["i7", "i12", "i300"], out)  # one prefix, then two bytes an item
>>> bytes(out), Reader(bytes(out)).ids()
(b'\x03\x01\x01i\x07\x00\x0c\x00,\x01', ['i7', 'i12', 'i300'])
"""

from __future__ import annotations

import itertools
import operator
import re
import struct
from collections.abc import Iterable, Mapping, Sequence

from schemas.events import EventType

__all__ = ["F32", "Reader", "floats", "ids", "named_counts", "scores", "text", "type_counts", "varint"]

F32 = struct.Struct("<f")
_IDS_TEXT, _IDS_U16, _IDS_U32 = 0, 1, 2
_NUMBERED = re.compile(r"(.*?)(0|[1-9][0-9]{0,9})")
_TYPE_CODES = {t.value: code for code, t in enumerate(EventType)}  # counts by event type: one byte a name
_TYPE_NAMES = dict(enumerate(t.value for t in EventType))
_OTHER_NAME = 0xFF
_SCORES_RAW, _SCORES_DESCENDING = 0, 1
_STEP_CODES = {1: "B", 2: "H", 4: "I"}  # struct codes of the step widths (3 is packed as 4 less a byte)


def varint(n: int, out: bytearray) -> None:
    """A non-negative int, seven bits a byte."""
    if n < 0:
        raise ValueError(f"cannot store a negative count {n}")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def text(s: str, out: bytearray) -> None:
    """UTF-8, length first."""
    data = s.encode("utf-8")
    varint(len(data), out)
    out += data


def type_counts(pairs: Mapping[str, int], out: bytearray) -> None:
    """Counts by event type: a one-byte code per known type name (any other name as text)."""
    varint(len(pairs), out)
    for name, n in pairs.items():
        code = _TYPE_CODES.get(name)
        if code is None:
            out.append(_OTHER_NAME)
            text(name, out)
        else:
            out.append(code)
        varint(int(n), out)


def named_counts(pairs: Mapping[str, int], out: bytearray) -> None:
    """Counts by any name (categories): the names as an id list (``c13``: a prefix once), then the counts."""
    ids(list(pairs), out)
    for n in pairs.values():
        varint(int(n), out)


def floats(values: Iterable[float], out: bytearray) -> None:
    """Float32s, count first."""
    if hasattr(values, "astype"):  # a numpy array (the learners' factors): no Python loop
        varint(len(values), out)  # type: ignore[arg-type]
        out += values.astype("<f4").tobytes()
        return
    floats = [float(v) for v in values]
    varint(len(floats), out)
    out += struct.pack(f"<{len(floats)}f", *floats)


def scores(scores: Sequence[float], out: bytearray) -> None:
    """Float32 scores, exact: best first (a top-k) as the first score, then each step down.

    A step is in float32 units, all steps in the fewest whole bytes that hold the largest (2-3 for
    a top-k instead of 4). The steps are between the floats' bits mapped to integers that sort like
    the floats (a bijection, so any float comes back bit for bit); scores not best first are raw.
    """
    n = len(scores)
    raw = struct.pack(f"<{n}f", *scores)
    keys = [_sortable(bits) for bits in struct.unpack(f"<{n}I", raw)]
    steps = [a - b for a, b in itertools.pairwise(keys)]
    if n < 2 or min(steps) < 0:
        out.append(_SCORES_RAW)
        out += raw
        return
    width = max(1, (max(steps).bit_length() + 7) // 8)
    out.append(_SCORES_DESCENDING)
    out.append(width)
    out += raw[:4]
    if width == 3:
        packed = struct.pack(f"<{n - 1}I", *steps)
        out += b"".join(packed[at:at + 3] for at in range(0, len(packed), 4))
    else:
        out += struct.pack(f"<{n - 1}{_STEP_CODES[width]}", *steps)


def _sortable(bits: int) -> int:
    """A float32's bits -> an integer in the floats' order: negative floats flipped, positive ones offset."""
    return bits ^ 0xFFFFFFFF if bits & 0x80000000 else bits | 0x80000000


_SPLIT: dict[str, tuple[str, int] | None] = {}  # the ids seen, split (a dict lookup beats an lru_cache call)


def _numbered(item: str) -> tuple[str, int] | None:
    """``("i", 3154)`` for ``"i3154"``; ``None`` when the id does not end in a plain decimal < 2**32."""
    match = _NUMBERED.fullmatch(item)
    number = int(match.group(2)) if match is not None else 1 << 32
    split = (match.group(1), number) if match is not None and number < 1 << 32 else None
    if len(_SPLIT) >= 1 << 18:
        _SPLIT.clear()
    _SPLIT[item] = split
    return split


def ids(items: Sequence[str], out: bytearray) -> None:
    """Item ids: one shared prefix and 2- or 4-byte numbers when every id allows it, else text."""
    varint(len(items), out)
    if not items:
        return
    try:
        split = list(map(_SPLIT.__getitem__, items))
    except KeyError:
        split = [_numbered(item) for item in items]
    first = split[0]
    if first is not None:
        prefix = first[0]
        # Kept only while every id has the first one's prefix (None: no plain decimal ending).
        numbers = [pair[1] for pair in split if pair is not None and pair[0] == prefix]
        if len(numbers) == len(split):
            wide = max(numbers) >= 1 << 16
            out.append(_IDS_U32 if wide else _IDS_U16)
            text(prefix, out)
            out += struct.pack(f"<{len(numbers)}{'I' if wide else 'H'}", *numbers)
            return
    out.append(_IDS_TEXT)
    for item in items:
        text(item, out)


class Reader:
    """Reads what the writers above wrote, in the same order; ``IndexError`` when the value ends early."""

    __slots__ = ("at", "data")

    def __init__(self, data: bytes | bytearray | memoryview, at: int = 0) -> None:
        self.data = bytes(data)  # bytes index and slice faster than a memoryview; a value is ~400 bytes
        self.at = at

    def byte(self) -> int:  # noqa: D102 -- each reads what the writer of the same name wrote
        value = self.data[self.at]
        self.at += 1
        return value

    def varint(self) -> int:  # noqa: D102
        b = self.data[self.at]
        if b < 0x80:  # most are one byte
            self.at += 1
            return b
        shift = n = 0
        while True:
            b = self.data[self.at]
            self.at += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                return n
            shift += 7

    def raw(self, size: int) -> bytes:  # noqa: D102
        if self.at + size > len(self.data):
            raise IndexError("value ends early")
        chunk = self.data[self.at:self.at + size]
        self.at += size
        return chunk

    def text(self) -> str:  # noqa: D102
        return str(self.raw(self.varint()), "utf-8")

    def f32(self) -> float:  # noqa: D102
        return float(F32.unpack(self.raw(4))[0])

    def floats(self) -> list[float]:  # noqa: D102
        n = self.varint()
        return list(struct.unpack(f"<{n}f", self.raw(4 * n)))

    def type_counts(self) -> dict[str, int]:  # noqa: D102
        counts = {}
        for _ in range(self.varint()):
            code = self.byte()
            name = self.text() if code == _OTHER_NAME else _TYPE_NAMES[code]
            counts[name] = self.varint()
        return counts

    def named_counts(self) -> dict[str, int]:  # noqa: D102
        return {name: self.varint() for name in self.ids()}

    def scores(self, n: int, limit: int | None = None) -> list[float]:
        """The ``n`` scores :func:`scores` wrote, or only the first ``limit`` of them (all are read past)."""
        take = n if limit is None else max(0, min(n, limit))
        mode = self.byte()
        if mode == _SCORES_RAW:
            return list(struct.unpack_from(f"<{take}f", self.raw(4 * n)))
        if mode != _SCORES_DESCENDING:
            raise ValueError(f"unknown score list mode {mode}")
        width = self.byte()
        first = _sortable(struct.unpack("<I", self.raw(4))[0])
        chunk = self.raw(width * (n - 1))[:width * max(0, take - 1)]
        if width == 3:
            chunk = b"".join(chunk[at:at + 3] + b"\0" for at in range(0, len(chunk), 3))
        steps = struct.unpack(f"<{max(0, take - 1)}{_STEP_CODES[4 if width == 3 else width]}", chunk)
        keys = list(itertools.accumulate(steps, operator.sub, initial=first))[:take]
        if not keys or keys[-1] & 0x80000000:  # all scores >= 0 (the usual top-k): the keys less the offset
            bits = [k ^ 0x80000000 for k in keys]
        else:
            bits = [k ^ 0x80000000 if k & 0x80000000 else k ^ 0xFFFFFFFF for k in keys]
        return list(struct.unpack(f"<{take}f", struct.pack(f"<{take}I", *bits)))

    def ids(self, limit: int | None = None) -> list[str]:
        """The item ids :func:`ids` wrote, or only the first ``limit`` of them (all are read past)."""
        n = self.varint()
        if not n:
            return []
        take = n if limit is None else max(0, min(n, limit))
        mode = self.byte()
        if mode == _IDS_TEXT:
            return [self.text() for _ in range(n)][:take]
        if mode not in (_IDS_U16, _IDS_U32):
            raise ValueError(f"unknown item-id list mode {mode}")
        prefix = self.text()
        code, size = ("H", 2) if mode == _IDS_U16 else ("I", 4)
        return [f"{prefix}{number}" for number in struct.unpack_from(f"<{take}{code}", self.raw(size * n))]
