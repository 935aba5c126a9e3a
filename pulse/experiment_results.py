"""An experiment's results as the job attributes them: read from Redis, reported, and exported as metrics.

The job writes one envelope hash per experiment, ``<prefix>:experiment:<name>``
(:meth:`schemas.redis_keys.RedisKeys.experiment`), whose payload is::

    {"experiment": "home-recs", "window_ms": 1800000,
     "variants": {"A": {"exposures": 1000, "clicked": 120, "clicks": 150, "carted": 20,
                        "purchased": 10, "purchases": 11}, "B": {...}}}

It is read under the *live* prefix (``pulse model promote``; absent: ``PULSE_REDIS_PREFIX``),
the one serving answers from. ``pulse experiments report`` turns it into a report with
:mod:`online_models.ab_results` (:func:`build_report`, :func:`render`); ``pulse exporter``
publishes the counts as gauges (:func:`metric_families`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from online_models.ab_results import OUTCOMES, RATE_NAMES, ExperimentCounts
from schemas.redis_keys import Envelope, RedisKeys
from serving.experiment_results import StoredResults, build_report, running_experiments, stored_results

if TYPE_CHECKING:
    import redis

__all__ = ["METRIC_NAMES", "StoredResults", "build_report", "metric_families", "read_results", "render",
           "running_experiments"]

#: The metrics ``pulse exporter`` publishes per configured experiment (names as in a scrape).
METRIC_NAMES = ("pulse_experiment_exposures", "pulse_experiment_outcomes")


def read_results(client: redis.Redis, home: RedisKeys, name: str) -> StoredResults:
    """Read ``name``'s results under the live prefix; ``ValueError`` naming the key when it is not results."""
    from pulse.model_alias import live_prefix

    prefix = live_prefix(client, home)
    key = RedisKeys(prefix).experiment(name)
    try:
        envelope = Envelope.from_fields_or_none(client.hgetall(key))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{key} does not hold experiment results: {exc}") from None
    return stored_results(prefix, key, envelope)


def _pct(value: float | None, signed: bool = False, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}%}" if signed else f"{value:.{digits}%}"


def _with_interval(value: float | None, interval: list[float] | None, signed: bool = False, digits: int = 2) -> str:
    if value is None:
        return "-"
    if interval is None:
        return f"{_pct(value, signed, digits)} [-]"
    low, high = interval
    return f"{_pct(value, signed, digits)} [{_pct(low, signed, digits)}, {_pct(high, signed, digits)}]"


def _p_value(p: float | None) -> str:
    return "-" if p is None else ("<0.0001" if p < 1e-4 else f"{p:.4f}")


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def render(report: Mapping[str, Any]) -> list[str]:
    """The report as text: a header, one table row per variant, one verdict line per treatment."""
    outcome, control = report["outcome"], report["control"]
    rate_name = RATE_NAMES[outcome]
    shown: list[str] = ["clicked", *(["carted"] if outcome == "carted" else []), "purchased"]
    header = ["variant", "policy", "exposures", *(f"{RATE_NAMES[o]} [95% CI]" for o in shown),
              f"{rate_name} lift vs {control} [95% CI]", "p-value"]
    table = [header]
    for row in report["variants"]:
        rates = [_with_interval(row["rates"][o]["rate"], row["rates"][o]["interval"]) for o in shown]
        versus = row["vs_control"]
        if versus is None:
            lift, p_value = "(control)", ""
        elif versus["lift"] is None:  # control at 0: the difference in points instead
            points = versus["difference"]
            lift = "-" if points is None else f"{points * 100:+.2f} points"
            p_value = _p_value(versus["p_value"])
        else:
            lift = _with_interval(versus["lift"], versus["lift_interval"], True, 1)
            p_value = _p_value(versus["p_value"])
        name = row["variant"] if row["defined"] else f"{row['variant']} (not defined)"
        table.append([name, row["policy"] or "-", f"{row['exposures']:,}", *rates, lift, p_value])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {2}  # exposures
    lines = [
        f"{report['experiment']} ({report['surface']}): {rate_name} by variant, control {control}",
        f"  from {report['key']} (live prefix {report['prefix']}), event time {_when(report['event_time_ms'])}"
        + (f", attribution window {report['window_ms'] / 60_000:g} min" if report["window_ms"] is not None else ""),
        "",
    ]
    for line in table:
        cells = [cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths,
                                                                                                  strict=True))]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.extend(report["verdicts"] or [f"only {control}: nothing to compare"])
    notes = {note for row in report["variants"] if row["vs_control"] for note in row["vs_control"]["notes"]}
    lines.extend(f"  note: {note}" for note in sorted(notes))
    return lines


def metric_families(results: Mapping[str, ExperimentCounts]) -> Iterator[Any]:
    """``pulse_experiment_exposures`` and ``pulse_experiment_outcomes`` from each experiment's counts (by name).

    Both families are yielded even without experiments, so a scrape always names them.

    >>> from online_models.ab_results import VariantCounts
    >>> counts = ExperimentCounts("home-recs", {"A": VariantCounts("A", 1000, clicked=120, carted=20, purchased=10)})
    >>> [(s.name, s.labels, s.value) for f in metric_families({"home-recs": counts}) for s in f.samples][:2]
    ... # doctest: +NORMALIZE_WHITESPACE
    [('pulse_experiment_exposures', {'experiment': 'home-recs', 'variant': 'A'}, 1000.0),
     ('pulse_experiment_outcomes', {'experiment': 'home-recs', 'variant': 'A', 'outcome': 'clicked'}, 120.0)]
    """
    from prometheus_client.core import GaugeMetricFamily

    exposures = GaugeMetricFamily("pulse_experiment_exposures", "Served lists of each variant the job counted",
                                  labels=["experiment", "variant"])
    outcomes = GaugeMetricFamily("pulse_experiment_outcomes",
                                 "Served lists with at least one attributed click / add_to_cart / purchase",
                                 labels=["experiment", "variant", "outcome"])
    for experiment, counts in results.items():
        for name, variant in counts.variants.items():
            exposures.add_metric([experiment, name], float(variant.exposures))
            for outcome in OUTCOMES:
                outcomes.add_metric([experiment, name, outcome], float(variant.successes(outcome)))
    yield exposures
    yield outcomes
