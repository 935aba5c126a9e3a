"""The job's cyclic garbage collection: between batches, over the objects made since the last one.

CPython's automatic collector walks the heap of cached users again and again as it grows, so the
user stage disables it and collects every ``every_s`` between batches (ADR 0007). A full
collection of that heap took 126-205 ms on this machine (2,500 ev/s), a stall of every Python
stage of the TaskManager (they share one interpreter lock). So each collection freezes what
survived it (``gc.freeze``: CPython's own tool for long-lived heaps) and the next one walks only
what was made since; every ``full_every_s`` the heap is unfrozen and collected whole, so cycles
among objects frozen earlier are still reclaimed, rarely.
"""

from __future__ import annotations

import gc
import time

#: How often the whole heap is collected (frozen objects included).
FULL_EVERY_S = 600.0


class Collector:
    """Collects cyclic garbage when asked between batches, at most every ``every_s`` (0: CPython's own).

    >>> collector = Collector(every_s=5.0, now=100.0)
    >>> collector.due(104.0), collector.due(105.0)
    (False, True)
    >>> Collector(every_s=0.0).due(1e9)
    False
    """

    def __init__(self, every_s: float, full_every_s: float = FULL_EVERY_S, now: float | None = None) -> None:
        self.every_s = every_s
        self.full_every_s = full_every_s
        self.collected_at = self.full_at = time.monotonic() if now is None else now

    def start(self) -> None:
        """Take over from CPython's automatic collector (the embedded interpreter's, for every stage)."""
        if self.every_s > 0:
            gc.disable()

    def due(self, now: float) -> bool:
        return self.every_s > 0 and now - self.collected_at >= self.every_s

    def collect(self, now: float) -> None:
        """Collect what was made since the last collection (everything, every ``full_every_s``), then freeze it."""
        if now - self.full_at >= self.full_every_s:
            gc.unfreeze()
            self.full_at = now
        gc.collect()
        gc.freeze()
        self.collected_at = time.monotonic()

    def stop(self) -> None:
        """Hand the heap back to CPython (the interpreter outlives the task: a failover, the next job)."""
        gc.unfreeze()
        gc.enable()
