"""online_models.ab_results: published reference values, the formulas by hand, edge cases, seeded simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from online_models.ab_results import (
    Z95,
    ExperimentCounts,
    VariantCounts,
    compare,
    katz_lift,
    newcombe_difference,
    two_proportion_p_value,
    wilson,
    z_of,
)

# Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat. Med. 17:857-872,
# Table II, method 3 (score, no continuity correction).
WILSON_REFERENCE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)),
                    ((0, 20), (0.0, 0.1611)), ((1, 29), (0.0061, 0.1718))]
# Newcombe (1998), "Interval estimation for the difference between independent proportions",
# Stat. Med. 17:873-890, Table II, method 10 (hybrid score, no continuity correction): (treatment, control).
NEWCOMBE_REFERENCE = [((56, 70), (48, 80), (0.0524, 0.3339)), ((9, 10), (3, 10), (0.1705, 0.8090)),
                      ((6, 7), (2, 7), (0.0582, 0.8062)), ((5, 56), (0, 29), (-0.0381, 0.1926))]


@pytest.mark.parametrize(("counts", "expected"), WILSON_REFERENCE)
def test_wilson_matches_newcombe_table(counts: tuple[int, int], expected: tuple[float, float]) -> None:
    interval = wilson(*counts)
    assert interval is not None
    assert (round(interval.low, 4), round(interval.high, 4)) == expected


@pytest.mark.parametrize(("treatment", "control", "expected"), NEWCOMBE_REFERENCE)
def test_difference_matches_newcombe_table(treatment: tuple[int, int], control: tuple[int, int],
                                           expected: tuple[float, float]) -> None:
    interval = newcombe_difference(control, treatment)
    assert interval is not None
    assert (round(interval.low, 4), round(interval.high, 4)) == expected


def test_wilson_by_the_formula_and_its_edges() -> None:
    x, n, z = 37, 410, Z95
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    interval = wilson(x, n)
    assert interval is not None
    assert interval.low == pytest.approx(centre - half, abs=1e-12)
    assert interval.high == pytest.approx(centre + half, abs=1e-12)
    everything = wilson(50, 50)
    assert everything is not None and everything.high == 1.0 and 0.9 < everything.low < 1.0
    assert wilson(0, 0) is None
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson(3, 2)


def test_katz_lift_and_p_value_by_the_formula() -> None:
    control, treatment = (2_500, 25_000), (3_250, 25_000)
    se = math.sqrt(1 / 3_250 - 1 / 25_000 + 1 / 2_500 - 1 / 25_000)
    interval, why = katz_lift(control, treatment)
    assert why is None and interval is not None
    assert interval.low == pytest.approx(1.3 * math.exp(-Z95 * se) - 1, rel=1e-12)
    assert interval.high == pytest.approx(1.3 * math.exp(Z95 * se) - 1, rel=1e-12)
    pooled = 5_750 / 50_000
    z = 0.03 / math.sqrt(pooled * (1 - pooled) * 2 / 25_000)
    p_value, why = two_proportion_p_value(control, treatment)
    assert why is None and p_value == pytest.approx(math.erfc(z / math.sqrt(2)), rel=1e-12)
    # Symmetric: swapping the arms tests the same thing.
    assert two_proportion_p_value(treatment, control)[0] == pytest.approx(p_value, rel=1e-12)


def test_z_of_other_confidences_widens_the_interval() -> None:
    assert z_of(0.95) == pytest.approx(Z95, abs=1e-9)
    a, b = VariantCounts("A", 5_000, clicked=500), VariantCounts("B", 5_000, clicked=560)
    narrow, wide = compare(a, b).difference_interval, compare(a, b, confidence=0.99).difference_interval
    assert narrow is not None and wide is not None
    assert wide.low < narrow.low and wide.high > narrow.high


@pytest.mark.parametrize(("a", "b"), [
    (VariantCounts("A"), VariantCounts("B")),                                   # nobody exposed
    (VariantCounts("A", 100, clicked=3), VariantCounts("B")),                   # B not served yet
    (VariantCounts("A", 100), VariantCounts("B", 100)),                         # no clicks at all
    (VariantCounts("A", 100), VariantCounts("B", 100, clicked=4)),              # control 0
    (VariantCounts("A", 100, clicked=4), VariantCounts("B", 100)),              # treatment 0
    (VariantCounts("A", 100, clicked=100), VariantCounts("B", 100, clicked=100)),  # everyone clicked
    (VariantCounts("A", 1, clicked=1), VariantCounts("B", 1)),
])
def test_edge_cases_never_crash_and_say_why(a: VariantCounts, b: VariantCounts) -> None:
    result = compare(a, b)
    for name in ("difference_interval", "lift_interval"):
        interval = getattr(result, name)
        assert interval is None or interval.low <= interval.high
    if result.difference_interval is not None:
        assert -1.0 <= result.difference_interval.low <= result.difference <= result.difference_interval.high <= 1.0
    missing = [v for v in (result.difference_interval, result.lift_interval, result.p_value) if v is None]
    assert bool(missing) == bool(result.notes), result
    assert result.verdict().startswith("B vs A: ")


def test_zero_exposures_give_no_rate_and_the_reason() -> None:
    result = compare(VariantCounts("A", 100, clicked=3), VariantCounts("B"))
    assert result.treatment.rate is None and result.treatment.reason == "no exposures yet"
    assert result.shows_difference is None
    assert result.verdict() == "B vs A: no comparison yet (B has no exposures yet)"


def test_payload_parsing_rejects_what_cannot_be_counts() -> None:
    payload = {"experiment": "home-recs", "window_ms": 1_800_000, "variants": {
        "A": {"exposures": 1000, "clicked": 120, "clicks": 150, "carted": 20, "purchased": 10, "purchases": 11,
              "later_field": "ignored"}}}
    counts = ExperimentCounts.from_payload(payload)
    assert counts.variant("A") == VariantCounts("A", 1000, 120, 150, 20, 10, 11)
    assert counts.window_ms == 1_800_000 and counts.variant("B") == VariantCounts("B")
    for bad, message in [({"variants": {}}, "no experiment name"),
                         ({"experiment": "x", "variants": []}, "by variant name"),
                         ({"experiment": "x", "variants": {"A": {"exposures": -1}}}, "exposures must be a count"),
                         ({"experiment": "x", "variants": {"A": {"exposures": 1, "purchased": 2}}}, "more than"),
                         ({"experiment": "x", "variants": {"A": {"exposures": "7"}}}, "must be a count")]:
        with pytest.raises(ValueError, match=message):
            ExperimentCounts.from_payload(bad)


def simulate(rng: np.random.Generator, n: int, p_a: float, p_b: float) -> tuple[VariantCounts, VariantCounts]:
    return (VariantCounts("A", n, clicked=int(rng.binomial(n, p_a))),
            VariantCounts("B", n, clicked=int(rng.binomial(n, p_b))))


def test_aa_difference_interval_covers_zero_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(18)
    results = [compare(*simulate(rng, 2_000, 0.1, 0.1)) for _ in range(2_000)]
    covered = sum(not r.shows_difference for r in results) / len(results)
    significant = sum(r.p_value is not None and r.p_value < 0.05 for r in results) / len(results)
    lift_covered = sum(r.lift_interval is not None and 0.0 in r.lift_interval for r in results) / len(results)
    print(f"\nA/A, 2,000 pairs of n=2,000 at p=0.1: difference interval covers 0 in {covered:.1%}, "
          f"lift interval in {lift_covered:.1%}, p < 0.05 in {significant:.1%}")
    assert 0.93 <= covered <= 0.97
    assert 0.93 <= lift_covered <= 0.97
    assert 0.03 <= significant <= 0.07


def test_a_planted_30_percent_lift_is_found_and_its_interval_covers_the_truth() -> None:
    rng = np.random.default_rng(30)
    results = [compare(*simulate(rng, 25_000, 0.10, 0.13)) for _ in range(200)]
    assert all(r.shows_difference and r.p_value is not None and r.p_value < 1e-6 for r in results)
    assert all(r.lift_interval is not None and r.lift_interval.low > 0.15 for r in results)
    # The true lift is 0.3: a 95 % interval misses it in about 5 % of the runs (binomial(200, .05) <= 20).
    missed = sum(r.lift_interval is not None and 0.3 not in r.lift_interval for r in results)
    assert missed <= 20
    print(f"\nB +30% at n=25,000: every difference interval excludes 0; the lift interval misses 0.3 in {missed}/200")
