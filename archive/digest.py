"""The count and digest of a set of events, to check that an archive holds exactly what was produced.

The digest is the sum (mod 2**64) of a 64-bit hash of each event's framed-Avro bytes: it does not
depend on the order the events were read in (partitions interleave), and an event archived twice
or missing changes it, as it changes the count.

>>> a, b = HourDigest(), HourDigest()
>>> for raw in (b"x", b"y"):
...     a.add(raw)
>>> for raw in (b"y", b"x"):
...     b.add(raw)
>>> a == b, a.count
(True, 2)
>>> b.add(b"x")  # the same event twice
>>> a == b
False
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_MASK = 2**64 - 1


def event_hash(raw: bytes) -> int:
    """A 64-bit hash of one event's bytes."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


@dataclass
class HourDigest:
    """How many events and the sum of their hashes."""

    count: int = 0
    digest: int = 0

    def add(self, raw: bytes) -> None:
        """Count one event."""
        self.count += 1
        self.digest = (self.digest + event_hash(raw)) & _MASK

    def __str__(self) -> str:
        return f"{self.count} events, digest {self.digest:016x}"


def digests_by_hour(events: Iterable[tuple[str, bytes]]) -> dict[str, HourDigest]:
    """(hour, raw bytes) pairs → each hour's digest.

    >>> sorted((h, d.count) for h, d in digests_by_hour([("h1", b"a"), ("h2", b"b"), ("h1", b"c")]).items())
    [('h1', 2), ('h2', 1)]
    """
    hours: dict[str, HourDigest] = defaultdict(HourDigest)
    for hour, raw in events:
        hours[hour].add(raw)
    return dict(hours)


def differences(expected: Mapping[str, HourDigest], archived: Mapping[str, HourDigest]) -> list[str]:
    """One line per hour whose archived events differ from the expected ones; empty when all agree.

    >>> differences({"h1": HourDigest(2, 7)}, {"h1": HourDigest(2, 7), "h2": HourDigest(1, 3)})
    ['hour h2: expected none, archived 1 events, digest 0000000000000003']
    """
    lines = []
    for hour in sorted(expected.keys() | archived.keys()):
        want, got = expected.get(hour), archived.get(hour)
        if want != got:
            lines.append(f"hour {hour}: expected {want or 'none'}, archived {got or 'none'}")
    return lines
