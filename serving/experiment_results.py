"""An experiment's results as the job attributes them, as a report: what ``GET /v1/experiments/{name}`` answers.

The job writes one envelope hash per experiment, ``<prefix>:experiment:<name>``
(:meth:`schemas.redis_keys.RedisKeys.experiment`), whose payload is::

    {"experiment": "home-recs", "window_ms": 1800000,
     "variants": {"A": {"exposures": 1000, "clicked": 120, "clicks": 150, "carted": 20,
                        "purchased": 10, "purchases": 11}, "B": {...}}}

Read under the *live* prefix (``pulse model promote``). :func:`build_report` turns it into the
report (pure, :mod:`online_models.ab_results` does the statistics); serving answers it as JSON,
``pulse experiments report`` prints it (``pulse/experiment_results.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from config.experiments import Experiment
from online_models.ab_results import OUTCOMES, Z95, ExperimentCounts, Interval, Outcome, VariantResult, compare
from schemas.redis_keys import Envelope

if TYPE_CHECKING:
    from config import Settings

__all__ = ["StoredResults", "build_report", "running_experiments", "stored_results"]


def running_experiments(settings: Settings) -> list[Experiment]:
    """The configured experiments, and the control-share split decisions run when none is on decisions."""
    from serving.decisions import DecisionPolicy

    running = list(settings.experiments)
    if not any(e.surface == "decisions" for e in running):
        running.append(DecisionPolicy(bandit_policy=settings.bandit_policy, experiment=settings.serving_experiment_name,
                                      salt=settings.serving_experiment_salt,
                                      control_share=settings.serving_control_share).experiment_definition())
    return running


@dataclass(frozen=True, slots=True)
class StoredResults:
    """What Redis holds for one experiment: where it was read, and the counts (``None``: the key is absent)."""

    prefix: str
    key: str
    counts: ExperimentCounts | None
    event_time_ms: int | None = None
    write_time_ms: int | None = None


def stored_results(prefix: str, key: str, envelope: Envelope | None) -> StoredResults:
    """The results ``key`` holds (``None``: absent); ``ValueError`` naming the key when it is not results."""
    if envelope is None:
        return StoredResults(prefix, key, None)
    try:
        counts = ExperimentCounts.from_payload(envelope.payload)
    except ValueError as exc:
        raise ValueError(f"{key} does not hold experiment results: {exc}") from None
    return StoredResults(prefix, key, counts, envelope.event_time_ms, envelope.write_time_ms)


def _interval(interval: Interval | None) -> list[float] | None:
    return None if interval is None else interval.as_list()


def _rate(result: VariantResult) -> dict[str, Any]:
    return {"rate": result.rate, "interval": _interval(result.interval), "successes": result.successes}


def build_report(experiment: Experiment, stored: StoredResults, outcome: Outcome, control: str) -> dict[str, Any]:
    """The report as JSON-ready data: every variant's counts and rates, and each one against ``control``.

    Variants come in the definition's order; a variant the results name but the definition does
    not (a removed one) follows, marked ``"defined": false``.
    """
    counts = stored.counts or ExperimentCounts(experiment.name)
    policies = {v.name: v.policy for v in experiment.variants}
    names = [*policies, *(v for v in counts.variants if v not in policies)]
    base = counts.variant(control)
    rows, verdicts = [], []
    for name in names:
        variant = counts.variant(name)
        row: dict[str, Any] = {
            "variant": name, "policy": policies.get(name), "defined": name in policies,
            "exposures": variant.exposures, "clicked": variant.clicked, "clicks": variant.clicks,
            "carted": variant.carted, "purchased": variant.purchased, "purchases": variant.purchases,
            "rates": {o: _rate(VariantResult.of(variant, o, Z95)) for o in OUTCOMES},
            "vs_control": None,
        }
        if name != control:
            result = compare(base, variant, outcome)
            row["vs_control"] = {
                "outcome": outcome, "difference": result.difference,
                "difference_interval": _interval(result.difference_interval), "lift": result.lift,
                "lift_interval": _interval(result.lift_interval), "p_value": result.p_value,
                "excludes_zero": result.shows_difference, "verdict": result.verdict(), "notes": list(result.notes),
            }
            verdicts.append(result.verdict())
        rows.append(row)
    return {
        "experiment": experiment.name, "surface": experiment.surface, "prefix": stored.prefix, "key": stored.key,
        "outcome": outcome, "control": control, "confidence": 0.95, "window_ms": counts.window_ms,
        "event_time_ms": stored.event_time_ms, "write_time_ms": stored.write_time_ms,
        "variants": rows, "verdicts": verdicts,
    }
