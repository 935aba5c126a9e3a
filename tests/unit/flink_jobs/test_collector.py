"""The job's collector walks only what was made since its last collection, and the whole heap rarely."""

from __future__ import annotations

import gc
import weakref

from flink_jobs.collector import Collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


def cycle() -> weakref.ref[Node]:
    return weakref.ref(Node())


def test_a_cycle_made_after_a_collection_is_freed_by_the_next_one() -> None:
    collector = Collector(every_s=5.0, full_every_s=600.0, now=0.0)
    collector.start()
    try:
        collector.collect(5.0)
        assert gc.get_freeze_count() > 0  # what survived is frozen: the next collection skips it
        young = cycle()
        assert young() is not None  # automatic collection is off
        collector.collect(10.0)
        assert young() is None
    finally:
        collector.stop()
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_cycle_frozen_while_alive_is_freed_by_the_full_collection() -> None:
    collector = Collector(every_s=5.0, full_every_s=600.0, now=0.0)
    collector.start()
    try:
        keep = [Node()]
        frozen = weakref.ref(keep[0])
        collector.collect(5.0)  # keep[0] is alive: frozen
        keep.clear()
        collector.collect(10.0)
        assert frozen() is not None  # a frozen cycle waits for the full collection
        collector.collect(600.0)
        assert frozen() is None
    finally:
        collector.stop()


def test_no_collection_is_due_with_cpythons_own_collector() -> None:
    collector = Collector(every_s=0.0, now=0.0)
    collector.start()
    assert gc.isenabled() and not collector.due(1e9)
