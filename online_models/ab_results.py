"""A/B results with confidence: per-variant rates, the difference and lift against control, and a test.

Pure (no I/O). The job's attribution counts, per experiment and variant, the served lists
(*exposures*) and how many of them led to at least one attributed click / add-to-cart / purchase
(``clicked`` / ``carted`` / ``purchased``); each is a binary outcome per exposure, so a variant's
rate is a proportion and two variants are compared as two independent proportions:

* **rate**: the Wilson score interval (Wilson 1927), which stays inside [0, 1] and keeps close
  to its nominal coverage at small counts and at 0 or all successes, unlike the Wald interval;
* **difference** ``p_B - p_A``: Newcombe's hybrid score interval (Newcombe 1998, method 10),
  built from the two Wilson intervals, so it is defined whenever both arms have exposures,
  also at 0 successes; the verdict ("interval excludes 0") reads this interval;
* **lift** ``p_B / p_A - 1``: the Katz log-ratio interval (Katz et al. 1978),
  ``exp(ln(p_B/p_A) ± z sqrt(1/x_B - 1/n_B + 1/x_A - 1/n_A)) - 1``. A lift is a ratio, and the
  log of a ratio of proportions is close to normal at A/B-test counts (thousands of exposures,
  dozens of successes and more), so the interval is asymmetric as a ratio's should be
  (+30 % and -23 % are the same step); it needs a success in each arm, and where it has none
  the lift interval is ``None`` with the reason, while the difference interval still decides;
* **test**: the two-sided pooled two-proportion z-test (equivalent to Pearson's chi-squared
  test of the 2x2 table without continuity correction), p-value ``erfc(|z| / sqrt 2)``.

>>> a = VariantCounts("A", exposures=25_000, clicked=2_500)
>>> b = VariantCounts("B", exposures=25_000, clicked=3_250)
>>> result = compare(a, b, outcome="clicked")
>>> round(result.lift, 3), result.lift_interval.excludes(0.0), result.shows_difference
(0.3, True, True)
>>> result.verdict()
'B vs A: +30.0% CTR, interval excludes 0'
>>> compare(a, VariantCounts("B", exposures=25_000, clicked=2_530)).verdict()
'B vs A: +1.2% CTR, interval includes 0: no difference shown'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal, get_args

__all__ = [
    "COUNT_NAMES",
    "OUTCOMES",
    "RATE_NAMES",
    "Z95",
    "Comparison",
    "ExperimentCounts",
    "Interval",
    "Outcome",
    "VariantCounts",
    "VariantResult",
    "compare",
    "katz_lift",
    "newcombe_difference",
    "two_proportion_p_value",
    "wilson",
    "z_of",
]

#: A variant's counters, as the job's attribution writes them per variant (flink_jobs/attribution.py).
COUNT_NAMES = ("exposures", "clicked", "clicks", "carted", "purchased", "purchases")

#: The binary outcomes of an exposure the job counts (lists with at least one such attributed event).
Outcome = Literal["clicked", "carted", "purchased"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
#: What each outcome's rate is called in a report.
RATE_NAMES: Mapping[str, str] = {"clicked": "CTR", "carted": "cart rate", "purchased": "conversion"}
#: The normal quantile of a two-sided 95 % interval.
Z95 = 1.959963984540054


def z_of(confidence: float) -> float:
    """The normal quantile of a two-sided interval at ``confidence``.

    >>> round(z_of(0.95), 6), round(z_of(0.99), 4)
    (1.959964, 2.5758)
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


@dataclass(frozen=True, slots=True)
class Interval:
    """A closed interval ``[low, high]``.

    >>> Interval(0.01, 0.05).excludes(0.0), 0.0 in Interval(-0.01, 0.05)
    (True, True)
    """

    low: float
    high: float

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside the interval."""
        return not self.low <= value <= self.high

    def __contains__(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_list(self) -> list[float]:
        """``[low, high]``, for JSON."""
        return [self.low, self.high]


def _check_counts(successes: int, trials: int) -> None:
    if trials < 0 or successes < 0 or successes > trials:
        raise ValueError(f"need 0 <= successes <= trials, got {successes} of {trials}")


def wilson(successes: int, trials: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval of ``successes / trials``; ``None`` without trials.

    Newcombe (1998, Stat. Med. 17:857) gives 0.2553-0.3662 for 81/263 and 0-0.1611 for 0/20:

    >>> i = wilson(81, 263); round(i.low, 4), round(i.high, 4)
    (0.2553, 0.3662)
    >>> i = wilson(0, 20); i.low, round(i.high, 4)
    (0.0, 0.1611)
    >>> wilson(0, 0) is None
    True
    """
    _check_counts(successes, trials)
    if trials == 0:
        return None
    p, n, z2 = successes / trials, trials, z * z
    denominator = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4 * n * n)) / denominator
    # At 0 (or all) successes the bound is exactly 0 (or 1); rounding must not push it past.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def newcombe_difference(control: tuple[int, int], treatment: tuple[int, int], z: float = Z95) -> Interval | None:
    """Newcombe's hybrid score interval of ``p_treatment - p_control``; each arm as ``(successes, trials)``.

    Newcombe (1998, Stat. Med. 17:873, method 10) gives 0.0524-0.3339 for 56/70 - 48/80 and
    -0.0381-0.1926 for 5/56 - 0/29:

    >>> i = newcombe_difference((48, 80), (56, 70)); round(i.low, 4), round(i.high, 4)
    (0.0524, 0.3339)
    >>> i = newcombe_difference((0, 29), (5, 56)); round(i.low, 4), round(i.high, 4)
    (-0.0381, 0.1926)
    >>> newcombe_difference((0, 0), (5, 56)) is None
    True
    """
    (x_a, n_a), (x_b, n_b) = control, treatment
    interval_a, interval_b = wilson(x_a, n_a, z), wilson(x_b, n_b, z)
    if interval_a is None or interval_b is None:
        return None
    p_a, p_b = x_a / n_a, x_b / n_b
    l_a, u_a, l_b, u_b = interval_a.low, interval_a.high, interval_b.low, interval_b.high
    below = math.sqrt((p_b - l_b) ** 2 + (u_a - p_a) ** 2)
    above = math.sqrt((u_b - p_b) ** 2 + (p_a - l_a) ** 2)
    return Interval(max(-1.0, p_b - p_a - below), min(1.0, p_b - p_a + above))


def katz_lift(control: tuple[int, int], treatment: tuple[int, int],
              z: float = Z95) -> tuple[Interval | None, str | None]:
    """The Katz log-ratio interval of the lift ``p_treatment / p_control - 1``, or ``None`` and why.

    >>> i, why = katz_lift((100, 1000), (130, 1000)); round(i.low, 4), round(i.high, 4), why
    (0.017, 0.6618, None)
    >>> katz_lift((0, 1000), (3, 1000))
    (None, 'the log-ratio interval needs a success in each arm')
    """
    (x_a, n_a), (x_b, n_b) = control, treatment
    _check_counts(x_a, n_a)
    _check_counts(x_b, n_b)
    if n_a == 0 or n_b == 0:
        return None, "an arm has no exposures"
    if x_a == 0 or x_b == 0:
        return None, "the log-ratio interval needs a success in each arm"
    log_ratio = math.log((x_b / n_b) / (x_a / n_a))
    se = math.sqrt(1.0 / x_b - 1.0 / n_b + 1.0 / x_a - 1.0 / n_a)
    return Interval(math.expm1(log_ratio - z * se), math.expm1(log_ratio + z * se)), None


def two_proportion_p_value(control: tuple[int, int], treatment: tuple[int, int]) -> tuple[float | None, str | None]:
    """Two-sided p-value of the pooled two-proportion z-test, or ``None`` and why.

    120/1000 against 150/1000: pooled 0.135, z = 0.03 / 0.01528 = 1.963, p = 0.0496 (as Pearson's
    chi-squared test of the 2x2 table).

    >>> p, why = two_proportion_p_value((120, 1000), (150, 1000)); round(p, 4), why
    (0.0496, None)
    >>> two_proportion_p_value((0, 500), (0, 500))
    (None, 'no variation: every exposure had the same outcome')
    """
    (x_a, n_a), (x_b, n_b) = control, treatment
    _check_counts(x_a, n_a)
    _check_counts(x_b, n_b)
    if n_a == 0 or n_b == 0:
        return None, "an arm has no exposures"
    pooled = (x_a + x_b) / (n_a + n_b)
    if pooled in (0.0, 1.0):
        return None, "no variation: every exposure had the same outcome"
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    z = (x_b / n_b - x_a / n_a) / se
    return math.erfc(abs(z) / math.sqrt(2.0)), None


def _count(name: str, what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != int(value):
        raise ValueError(f"variant {name!r}: {what} must be a count (a whole number >= 0), not {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """One variant's exposures and attributed outcomes, as the job counts them (a payload's ``variants`` entry).

    ``clicks`` and ``purchases`` are attributed events in total (a list may have several);
    ``clicked``, ``carted`` and ``purchased`` count lists, so none exceeds ``exposures``.

    >>> VariantCounts.from_payload("B", {"exposures": 10, "clicked": 2, "clicks": 3}).successes("clicked")
    2
    >>> VariantCounts("B", exposures=1, clicked=2)
    Traceback (most recent call last):
    ...
    ValueError: variant 'B': clicked 2 is more than its 1 exposures
    """

    name: str
    exposures: int = 0
    clicked: int = 0
    clicks: int = 0
    carted: int = 0
    purchased: int = 0
    purchases: int = 0

    def __post_init__(self) -> None:
        for what in COUNT_NAMES:
            _count(self.name, what, getattr(self, what))
        for outcome in OUTCOMES:
            if self.successes(outcome) > self.exposures:
                raise ValueError(f"variant {self.name!r}: {outcome} {self.successes(outcome)} is more than "
                                 f"its {self.exposures} exposures")

    @classmethod
    def from_payload(cls, name: str, fields: Mapping[str, Any]) -> VariantCounts:
        """From the payload's entry of one variant; missing counts are 0, fields not known here are ignored."""
        if not isinstance(fields, Mapping):
            raise ValueError(f"variant {name!r}: expected an object of counts, not {type(fields).__name__}")
        known = COUNT_NAMES
        return cls(name, **{what: _count(name, what, fields.get(what, 0)) for what in known})

    def successes(self, outcome: Outcome | str) -> int:
        """Exposures with at least one attributed event of ``outcome``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {outcome!r}; one of {', '.join(OUTCOMES)}")
        value: int = getattr(self, outcome)
        return value


@dataclass(frozen=True, slots=True)
class ExperimentCounts:
    """One experiment's counts by variant: the payload of ``<prefix>:experiment:<name>``.

    >>> counts = ExperimentCounts.from_payload({"experiment": "home-recs", "window_ms": 1_800_000,
    ...     "variants": {"A": {"exposures": 1000, "clicked": 120}}})
    >>> counts.variant("A").clicked, counts.variant("B").exposures   # B: no exposures yet
    (120, 0)
    """

    experiment: str
    variants: Mapping[str, VariantCounts] = field(default_factory=dict)
    window_ms: int | None = None

    @classmethod
    def from_payload(cls, payload: Any) -> ExperimentCounts:
        """Parse the payload; ``ValueError`` naming what is wrong."""
        if not isinstance(payload, Mapping):
            raise ValueError(f"expected an object, not {type(payload).__name__}")
        name, variants, window = payload.get("experiment"), payload.get("variants", {}), payload.get("window_ms")
        if not isinstance(name, str) or not name:
            raise ValueError("no experiment name")
        if not isinstance(variants, Mapping):
            raise ValueError(f"variants must be an object by variant name, not {type(variants).__name__}")
        window_ms = None if window is None else _count(name, "window_ms", window)
        return cls(name, {str(v): VariantCounts.from_payload(str(v), c) for v, c in variants.items()}, window_ms)

    def variant(self, name: str) -> VariantCounts:
        """The counts of ``name``; all 0 when the job has seen no exposure of it yet."""
        return self.variants.get(name) or VariantCounts(name)


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One variant's rate of an outcome with its interval (``None`` and a reason without exposures).

    >>> r = VariantResult.of(VariantCounts("A", exposures=263, clicked=81), "clicked")
    >>> round(r.rate, 4), round(r.interval.low, 4), r.reason
    (0.308, 0.2553, None)
    >>> VariantResult.of(VariantCounts("B"), "clicked").reason
    'no exposures yet'
    """

    variant: str
    outcome: Outcome
    exposures: int
    successes: int
    rate: float | None
    interval: Interval | None
    reason: str | None = None

    @classmethod
    def of(cls, counts: VariantCounts, outcome: Outcome, z: float = Z95) -> VariantResult:
        """The rate of ``outcome`` among ``counts``' exposures and its Wilson interval."""
        successes = counts.successes(outcome)
        if counts.exposures == 0:
            return cls(counts.name, outcome, 0, 0, None, None, "no exposures yet")
        return cls(counts.name, outcome, counts.exposures, successes, successes / counts.exposures,
                   wilson(successes, counts.exposures, z))


@dataclass(frozen=True, slots=True)
class Comparison:
    """A treatment against the control on one outcome: difference, lift, their intervals and the test.

    A value that cannot be computed is ``None``, and ``notes`` says why.
    """

    outcome: Outcome
    control: VariantResult
    treatment: VariantResult
    difference: float | None
    difference_interval: Interval | None
    lift: float | None
    lift_interval: Interval | None
    p_value: float | None
    notes: tuple[str, ...] = ()

    @property
    def shows_difference(self) -> bool | None:
        """Whether the difference interval excludes 0 (``None``: no interval yet)."""
        return None if self.difference_interval is None else self.difference_interval.excludes(0.0)

    def verdict(self) -> str:
        """One line: the lift (or the difference in points) and whether the interval excludes 0.

        >>> compare(VariantCounts("A", 100, clicked=0), VariantCounts("B", 100, clicked=9)).verdict()
        'B vs A: +9.00 points CTR (control 0), interval excludes 0'
        """
        who = f"{self.treatment.variant} vs {self.control.variant}"
        rate = RATE_NAMES[self.outcome]
        if self.difference is None or self.difference_interval is None:
            return f"{who}: no comparison yet ({'; '.join(self.notes)})"
        if self.lift is not None:
            size = f"{self.lift:+.1%} {rate}"
        else:
            size = f"{self.difference * 100:+.2f} points {rate} (control 0)"
        if self.shows_difference:
            return f"{who}: {size}, interval excludes 0"
        return f"{who}: {size}, interval includes 0: no difference shown"


def compare(control: VariantCounts, treatment: VariantCounts, outcome: Outcome = "clicked",
            confidence: float = 0.95) -> Comparison:
    """``treatment`` against ``control`` on ``outcome``: never raises on 0 exposures or 0 / all successes.

    >>> c = compare(VariantCounts("A", 1000, clicked=1000), VariantCounts("B", 1000, clicked=1000))
    >>> c.lift, c.lift_interval is not None, c.p_value, c.notes
    (0.0, True, None, ('no variation: every exposure had the same outcome',))
    >>> compare(VariantCounts("A", 1000, clicked=10), VariantCounts("B")).notes
    ('B has no exposures yet',)
    """
    z = Z95 if confidence == 0.95 else z_of(confidence)
    a, b = VariantResult.of(control, outcome, z), VariantResult.of(treatment, outcome, z)
    empty = [f"{r.variant} has no exposures yet" for r in (a, b) if r.exposures == 0]
    if empty:
        return Comparison(outcome, a, b, None, None, None, None, None, tuple(empty))
    assert a.rate is not None and b.rate is not None  # both have exposures
    arm_a, arm_b = (a.successes, a.exposures), (b.successes, b.exposures)
    notes: list[str] = []
    lift = None
    lift_interval: Interval | None = None
    if a.successes == 0:
        notes.append(f"no lift: {a.variant} has no {outcome} exposures (a ratio to 0)")
    else:
        lift = b.rate / a.rate - 1.0
        lift_interval, why = katz_lift(arm_a, arm_b, z)
        if why:
            notes.append(f"no lift interval: {why}")
    p_value, why = two_proportion_p_value(arm_a, arm_b)
    if why:
        notes.append(why)
    return Comparison(outcome, a, b, b.rate - a.rate, newcombe_difference(arm_a, arm_b, z), lift, lift_interval,
                      p_value, tuple(notes))
