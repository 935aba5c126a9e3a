"""How far behind the job is: consumer lag, score freshness and dead letters, measured and judged.

Used by ``pulse lag`` (one-shot or ``--watch``, thresholds as exit codes for probes) and by
``pulse exporter`` (the same numbers as Prometheus metrics). Three modules, re-exported here:

* :mod:`pulse.lag.measure`: the arithmetic (lag, freshness statistics, thresholds, JSON shapes);
  pure, tested without services;
* :mod:`pulse.lag.prometheus`: a report as Prometheus metric families;
* :mod:`pulse.lag.probe`: :class:`LagProbe` does the reading (Kafka offsets and records, Redis).

Definitions (README "Operating Pulse"):

* **lag in messages** of a partition = high watermark - the job's committed offset (consumer
  group ``settings.job_group_id``; the job commits on each completed checkpoint, so lag reads up
  to one checkpoint interval high). A group without an offset, or one behind the log start
  (retention deleted what it never read), counts from the log start: that is where it resumes.
* **lag in seconds** = event time of the newest produced record (offset high-1) - event time of
  the newest consumed one (committed-1), never negative, 0 when nothing is pending. When
  nothing was consumed yet, the oldest pending record stands in for the newest consumed one.
  A record that does not decode (a dead letter) has no event time: the nearest one that does,
  within :data:`~pulse.lag.measure.WINDOW` records, is used instead.
* **score freshness** = now - ``et`` of per-user ``recs`` / ``counts`` keys found by ``SCAN``;
  the newest of the sample says whether scores are being written at all.
* **dead letters**: committed records on the DLQ topic, in total and in the last window.

>>> lag_messages(committed=90, low=0, high=100), lag_messages(committed=None, low=40, high=100)
(10, 60)
>>> lag_seconds(newest_produced_ms=10_000, newest_consumed_ms=7_500, pending=10)
2.5
>>> lag_seconds(newest_produced_ms=10_000, newest_consumed_ms=7_500, pending=0)
0.0
"""

from pulse.lag.measure import (
    DeadLetters,
    Freshness,
    LagReport,
    PartitionLag,
    ReadWindow,
    Thresholds,
    breaches,
    freshness,
    lag_messages,
    lag_seconds,
    offsets_to_read,
)
from pulse.lag.probe import LagProbe
from pulse.lag.prometheus import METRIC_NAMES, metric_families

__all__ = [
    "METRIC_NAMES",
    "DeadLetters",
    "Freshness",
    "LagProbe",
    "LagReport",
    "PartitionLag",
    "ReadWindow",
    "Thresholds",
    "breaches",
    "freshness",
    "lag_messages",
    "lag_seconds",
    "metric_families",
    "offsets_to_read",
]
