"""Replay order of a file source: event time (the default) or the order of the lines.

Dataset files are rarely in time order (MovieLens ``u.data`` is not). Replayed as they are,
the job sees time jump back and forth: sessions split and most events count as late, and
the online models learn in a different order than ``pulse eval`` evaluates them. So file
sources are replayed by event time, stable (events with the same time keep their file
order), which is exactly the order ``pulse eval`` uses.

Sorting needs the whole file. Up to ``chunk_size`` events are sorted in memory; a larger file
is sorted in chunks spilled to temporary files and merged, so memory stays bounded (ML-32M).

>>> from schemas.events import Event, EventType
>>> events = [Event(str(i), EventType.VIEW, "u", t) for i, t in enumerate([30, 10, 20, 10])]
>>> [e.event_id for e in ordered(events, ReplayOrder.TIME)]
['1', '3', '2', '0']
>>> [e.event_id for e in ordered(events, ReplayOrder.FILE)]
['0', '1', '2', '3']
>>> [e.event_id for e in time_ordered(events, chunk_size=2)]  # spilled and merged: same order
['1', '3', '2', '0']
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import pickle
import tempfile
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import IO

from schemas.events import Event

#: Events sorted in memory at a time (about 0.5 GB of events); more are spilled to disk.
CHUNK_SIZE = 1_000_000


class ReplayOrder(StrEnum):
    """``--order`` of ``pulse produce`` and ``pulse eval``: by event time, or as in the file."""

    TIME = "time"
    FILE = "file"


def ordered(events: Iterable[Event], order: ReplayOrder) -> Iterator[Event]:
    """``events`` in the replay ``order``."""
    return time_ordered(events) if order is ReplayOrder.TIME else iter(events)


def _time(event: Event) -> int:
    return event.event_time_ms


def time_ordered(events: Iterable[Event], *, chunk_size: int = CHUNK_SIZE) -> Iterator[Event]:
    """``events`` by event time, ties in input order; lazy (nothing is read before the first ``next``)."""
    source = iter(events)
    first = sorted(itertools.islice(source, chunk_size), key=_time)
    if len(first) < chunk_size:
        yield from first
        return
    with contextlib.ExitStack() as stack:
        runs = [_spill(stack, first)]
        del first
        while chunk := sorted(itertools.islice(source, chunk_size), key=_time):
            runs.append(_spill(stack, chunk))
        # heapq.merge is stable across runs (ties come from the earlier run), so ties keep file order.
        yield from heapq.merge(*(_read_run(run) for run in runs), key=_time)


def _spill(stack: contextlib.ExitStack, chunk: list[Event]) -> IO[bytes]:
    run = stack.enter_context(tempfile.TemporaryFile(prefix="pulse-order-"))  # noqa: SIM115 - closed by the stack
    pickler = pickle.Pickler(run, protocol=pickle.HIGHEST_PROTOCOL)
    for event in chunk:
        pickler.dump(event)
        pickler.clear_memo()
    run.seek(0)
    return run


def _read_run(run: IO[bytes]) -> Iterator[Event]:
    unpickler = pickle.Unpickler(run)
    while True:
        try:
            yield unpickler.load()
        except EOFError:
            return
