"""Metrics the JVM holds: no metric read ever calls into Python.

PyFlink's Python gauges are callbacks: the metric reporter's threads call into the embedded
interpreter to read them. Two Prometheus scrapes at once crashed a TaskManager's JVM that way
(SIGSEGV in CPython's ``take_gil`` under ``MetricGauge.getValue``, seen in
``tests/reliability/test_bad_input.py``). So Pulse exports current values through Flink counters
moved by differences (Flink counters can go down; Flink's Prometheus reporter exports counters as
gauges anyway), and counts through counters incremented in batches, since every ``inc`` is a call
into the JVM.
"""

from __future__ import annotations

from typing import Any


class JvmGauge:
    """A current value kept in a Flink counter: :meth:`set` moves the counter by the difference.

    >>> class FakeCounter:
    ...     count = 0
    ...     def inc(self, n=1): self.count += n
    ...     def dec(self, n=1): self.count -= n
    >>> gauge = JvmGauge(FakeCounter())
    >>> gauge.set(7); gauge.set(3); gauge.set(3); gauge.counter.count
    3
    """

    def __init__(self, counter: Any) -> None:
        self.counter = counter
        self.value = 0

    def set(self, value: int) -> None:
        """Make the exported value ``value`` (no call into the JVM when it is unchanged)."""
        delta = int(value) - self.value
        if delta > 0:
            self.counter.inc(delta)
        elif delta < 0:
            self.counter.dec(-delta)
        self.value += delta


class BatchedCount:
    """A Flink counter incremented from a Python tally every ``every`` counts and on :meth:`flush`.

    >>> class FakeCounter:
    ...     count = 0
    ...     def inc(self, n=1): self.count += n
    >>> count = BatchedCount(FakeCounter(), every=3)
    >>> for _ in range(4): count.add()
    >>> count.counter.count, count.flush(), count.counter.count
    (3, None, 4)
    """

    def __init__(self, counter: Any, every: int = 256) -> None:
        self.counter = counter
        self.every = every
        self.pending = 0

    def add(self, n: int = 1) -> None:
        self.pending += n
        if self.pending >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.counter.inc(self.pending)
            self.pending = 0
