"""What ``pulse exporter`` publishes: a :class:`~pulse.lag.measure.LagReport` as Prometheus metric families.

Rendering only: the report is measured elsewhere (:class:`pulse.lag.probe.LagProbe`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pulse.lag.measure import LagReport, resume_offset

__all__ = ["METRIC_NAMES", "metric_families"]


#: Every metric ``pulse exporter`` publishes (names as they appear in a scrape).
METRIC_NAMES = (
    "pulse_lag_messages",
    "pulse_lag_seconds",
    "pulse_consumer_committed_offset",
    "pulse_log_end_offset",
    "pulse_score_freshness_seconds",
    "pulse_score_keys_sampled",
    "pulse_dlq_records_total",
    "pulse_dlq_records_recent",
    "pulse_exporter_up",
)


def metric_families(report: LagReport | None) -> Iterator[Any]:
    """Prometheus metric families of one report (``None``: the measurement failed, only ``up`` = 0).

    >>> from pulse.lag.measure import DeadLetters, PartitionLag, freshness
    >>> p = PartitionLag(0, committed=90, low=0, high=100, newest_produced_ms=20_000, newest_consumed_ms=5_000)
    >>> r = LagReport("events", "g", 30_000, (p,), freshness([25_000], 30_000), DeadLetters(7, 2, 60))
    >>> values = {s.name: s.value for f in metric_families(r) for s in f.samples}
    >>> values  # doctest: +NORMALIZE_WHITESPACE
    {'pulse_lag_messages': 10.0, 'pulse_lag_seconds': 15.0, 'pulse_consumer_committed_offset': 90.0,
     'pulse_log_end_offset': 100.0, 'pulse_score_freshness_seconds': 5.0, 'pulse_score_keys_sampled': 1.0,
     'pulse_dlq_records_total': 7.0, 'pulse_dlq_records_recent': 2.0, 'pulse_exporter_up': 1.0}
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    up = GaugeMetricFamily("pulse_exporter_up", "1 if the last measurement of Kafka and Redis succeeded")
    up.add_metric([], 0.0 if report is None else 1.0)
    if report is None:
        yield up
        return
    labels = ["topic", "group", "partition"]

    def per_partition(name: str, doc: str, value: Any) -> GaugeMetricFamily:
        family = GaugeMetricFamily(name, doc, labels=labels)
        for p in report.partitions:
            family.add_metric([report.topic, report.group, str(p.partition)], float(value(p)))
        return family

    yield per_partition(
        "pulse_lag_messages", "Records of the events topic the job has not committed", lambda p: p.lag_messages
    )
    yield per_partition(
        "pulse_lag_seconds", "Event time of the newest produced minus newest consumed record", lambda p: p.lag_seconds
    )
    yield per_partition(
        "pulse_consumer_committed_offset", "Offset the job resumes from (committed, else log start)",
        lambda p: resume_offset(p.committed, p.low),
    )
    yield per_partition("pulse_log_end_offset", "High watermark of the events topic", lambda p: p.high)
    fresh = GaugeMetricFamily(
        "pulse_score_freshness_seconds", "now - event time of sampled per-user scores", labels=["stat"]
    )
    for stat, age in (("newest", report.freshness.newest_age_ms), ("median", report.freshness.median_age_ms),
                      ("oldest", report.freshness.oldest_age_ms)):
        if age is not None:
            fresh.add_metric([stat], age / 1000.0)
    yield fresh
    sampled = GaugeMetricFamily("pulse_score_keys_sampled", "Per-user score keys the freshness sample found")
    sampled.add_metric([], float(report.freshness.sampled))
    yield sampled
    dlq = CounterMetricFamily("pulse_dlq_records", "Committed records on the dead-letter topic", labels=["topic"])
    dlq.add_metric([report.dlq_topic], float(report.dead_letters.total))
    yield dlq
    recent = GaugeMetricFamily(
        "pulse_dlq_records_recent", "Dead letters timestamped within the window", labels=["topic", "window_s"]
    )
    recent.add_metric([report.dlq_topic, f"{report.dead_letters.window_s:g}"], float(report.dead_letters.recent))
    yield recent
    yield up
