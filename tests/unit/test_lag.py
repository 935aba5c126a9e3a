"""The pure part of pulse/lag/ (measure, prometheus): lag arithmetic, freshness, thresholds, JSON, metrics."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pulse.lag import (
    METRIC_NAMES,
    DeadLetters,
    LagReport,
    PartitionLag,
    ReadWindow,
    Thresholds,
    breaches,
    freshness,
    lag_messages,
    lag_seconds,
    metric_families,
    offsets_to_read,
)


@pytest.mark.parametrize(
    ("committed", "low", "high", "want"),
    [
        (None, 0, 0, 0),  # empty partition, never consumed
        (None, 0, 10, 10),  # never consumed: everything retained is pending
        (None, 4, 10, 6),  # ... from the log start
        (10, 0, 10, 0),  # caught up
        (7, 0, 10, 3),
        (2, 5, 10, 5),  # committed offset deleted by retention: resumes at the log start
        (12, 0, 10, 0),  # (a truncated topic) never negative
    ],
)
def test_lag_messages(committed: int | None, low: int, high: int, want: int) -> None:
    assert lag_messages(committed, low, high) == want


def test_offsets_to_read_looks_back_from_both_ends_of_the_pending_range() -> None:
    assert offsets_to_read(7, 0, 10) == (ReadWindow(0, 7, "last"), ReadWindow(0, 10, "last"))
    assert offsets_to_read(500, 0, 1000) == (ReadWindow(450, 500, "last"), ReadWindow(950, 1000, "last"))
    # Never consumed, or the committed offset was deleted: the oldest pending record stands in.
    assert offsets_to_read(None, 0, 10) == (ReadWindow(0, 10, "first"), ReadWindow(0, 10, "last"))
    assert offsets_to_read(2, 5, 100) == (ReadWindow(5, 55, "first"), ReadWindow(50, 100, "last"))
    assert offsets_to_read(10, 0, 10) == (None, None)


def test_lag_seconds() -> None:
    assert lag_seconds(70_000, 10_000, pending=1) == 60.0
    assert lag_seconds(10_000, 70_000, pending=1) == 0.0  # out-of-order event times: never negative
    assert lag_seconds(70_000, 10_000, pending=0) == 0.0
    assert lag_seconds(None, 10_000, pending=5) == 0.0


def test_freshness_statistics() -> None:
    f = freshness([1_000, 4_000, 2_000, 3_000], now_ms=5_000)
    assert (f.sampled, f.newest_age_ms, f.median_age_ms, f.oldest_age_ms) == (4, 1_000, 2_000, 4_000)  # lower median
    assert freshness([6_000], now_ms=5_000).newest_age_ms == 0  # clock skew: not negative


def report(*partitions: PartitionLag, ages: list[int] | None = None, dlq: tuple[int, int] = (0, 0)) -> LagReport:
    times = [100_000 - age for age in (ages or [])]
    return LagReport("events", "pulse-job", 100_000, partitions, freshness(times, 100_000),
                     DeadLetters(dlq[0], dlq[1], 60.0), "events.dlq")


def test_report_totals_and_json() -> None:
    r = report(
        PartitionLag(0, 90, 0, 100, newest_produced_ms=50_000, newest_consumed_ms=20_000),
        PartitionLag(1, None, 0, 5, newest_produced_ms=40_000, newest_consumed_ms=39_000),
        PartitionLag(2, 7, 0, 7),
        ages=[500, 9_000],
        dlq=(3, 1),
    )
    assert r.lag_messages == 15
    assert r.lag_seconds == 30.0
    doc = r.to_json()
    assert doc["total"] == {"lag_messages": 15, "lag_seconds": 30.0, "committed_offset": 97, "high_watermark": 112}
    assert [p["lag_messages"] for p in doc["partitions"]] == [10, 5, 0]
    assert doc["partitions"][1]["committed_offset"] is None
    assert doc["freshness"] == {"sampled_keys": 2, "newest_age_ms": 500, "median_age_ms": 500, "oldest_age_ms": 9_000}
    assert doc["dead_letters"] == {"topic": "events.dlq", "total": 3, "recent": 1, "window_s": 60.0}


def test_breaches_only_for_given_limits() -> None:
    r = report(PartitionLag(0, 0, 0, 50, newest_produced_ms=80_000, newest_consumed_ms=20_000), ages=[2_000])
    assert breaches(r, Thresholds()) == []
    assert breaches(r, Thresholds(max_lag_seconds=60, max_lag_messages=50, max_freshness_ms=2_000)) == []
    assert breaches(r, Thresholds(max_lag_seconds=59.9, max_lag_messages=49, max_freshness_ms=1_999)) == [
        "lag 60.0 s > 59.9 s",
        "lag 50 messages > 49",
        "score freshness 2000 ms > 1999 ms",
    ]


def test_freshness_limit_without_any_scores_is_a_breach() -> None:
    assert breaches(report(PartitionLag(0, 0, 0, 0)), Thresholds(max_freshness_ms=10**9)) == [
        "score freshness unknown: no per-user scores in Redis"
    ]


class _Static:
    def __init__(self, r: LagReport | None) -> None:
        self.r = r

    def collect(self):  # type: ignore[no-untyped-def]
        return metric_families(self.r)


def scrape(r: LagReport | None) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(_Static(r))
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def test_metrics_carry_the_report_values_with_units_in_their_names() -> None:
    r = report(
        PartitionLag(0, 90, 0, 100, newest_produced_ms=50_000, newest_consumed_ms=20_000),
        PartitionLag(1, None, 3, 5),
        ages=[1_500, 4_000, 8_000],
        dlq=(12, 2),
    )
    got = scrape(r)
    assert set(got) == set(METRIC_NAMES)
    lag = {labels["partition"]: v for labels, v in got["pulse_lag_messages"]}
    assert lag == {"0": 10.0, "1": 2.0}
    assert got["pulse_lag_messages"][0][0] == {"topic": "events", "group": "pulse-job", "partition": "0"}
    assert {labels["partition"]: v for labels, v in got["pulse_lag_seconds"]} == {"0": 30.0, "1": 0.0}
    assert {labels["partition"]: v for labels, v in got["pulse_consumer_committed_offset"]} == {"0": 90.0, "1": 3.0}
    assert {labels["partition"]: v for labels, v in got["pulse_log_end_offset"]} == {"0": 100.0, "1": 5.0}
    assert {labels["stat"]: v for labels, v in got["pulse_score_freshness_seconds"]} == {
        "newest": 1.5, "median": 4.0, "oldest": 8.0,
    }
    assert got["pulse_dlq_records_total"] == [({"topic": "events.dlq"}, 12.0)]
    assert got["pulse_dlq_records_recent"] == [({"topic": "events.dlq", "window_s": "60"}, 2.0)]
    assert got["pulse_exporter_up"] == [({}, 1.0)]


def test_failed_measurement_is_only_up_zero() -> None:
    assert scrape(None) == {"pulse_exporter_up": [({}, 0.0)]}
