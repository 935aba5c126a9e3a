"""pulse.experiment_results: the report built from stored counts, as data and as text (no Redis)."""

from __future__ import annotations

from config.experiments import Experiment, Variant
from online_models.ab_results import ExperimentCounts, VariantCounts
from pulse.experiment_results import StoredResults, build_report, render

HOME = Experiment(name="home-recs", surface="recommendations", variants=(
    Variant(name="A", policy="mf", share=0.4), Variant(name="B", policy="popularity", share=0.4),
    Variant(name="C", policy="popularity", share=0.2)))


def stored(**variants: VariantCounts) -> StoredResults:
    return StoredResults("pulse", "pulse:experiment:home-recs", ExperimentCounts("home-recs", variants, 1_800_000),
                         1_796_392_800_000, 1_796_392_800_500)


def test_variants_in_definition_order_missing_ones_at_zero_and_removed_ones_marked() -> None:
    results = stored(B=VariantCounts("B", 20_000, clicked=2_600, purchased=260),
                     A=VariantCounts("A", 20_000, clicked=2_000, purchased=200),
                     OLD=VariantCounts("OLD", 50, clicked=5))
    report = build_report(HOME, results, "clicked", "A")
    assert [(r["variant"], r["defined"], r["exposures"]) for r in report["variants"]] == [
        ("A", True, 20_000), ("B", True, 20_000), ("C", True, 0), ("OLD", False, 50)]
    a, b, c, _ = report["variants"]
    assert a["vs_control"] is None
    assert round(b["vs_control"]["lift"], 6) == 0.3 and b["vs_control"]["excludes_zero"] is True
    assert c["rates"]["clicked"]["rate"] is None and c["vs_control"]["notes"] == ["C has no exposures yet"]
    assert report["verdicts"][:2] == ["B vs A: +30.0% CTR, interval excludes 0",
                                      "C vs A: no comparison yet (C has no exposures yet)"]
    lines = render(report)
    assert lines[0] == "home-recs (recommendations): CTR by variant, control A"
    assert "event time 2026-12-04 14:00:00 UTC, attribution window 30 min" in lines[1]
    header, row_a, row_b, row_c, row_old = lines[3:8]
    assert header.split()[:3] == ["variant", "policy", "exposures"]
    assert "CTR lift vs A [95% CI]" in header and "conversion [95% CI]" in header and "cart rate" not in header
    assert "(control)" in row_a and "+30.0% [+" in row_b and "<0.0001" in row_b
    assert row_c.split()[:3] == ["C", "popularity", "0"] and row_old.startswith("OLD (not defined)")
    assert "B vs A: +30.0% CTR, interval excludes 0" in lines and "  note: C has no exposures yet" in lines


def test_another_outcome_and_control_with_no_successes() -> None:
    results = stored(A=VariantCounts("A", 1_000, clicked=100), B=VariantCounts("B", 1_000, clicked=90, carted=12))
    report = build_report(HOME, results, "carted", "A")
    versus = report["variants"][1]["vs_control"]
    assert versus["outcome"] == "carted" and versus["lift"] is None and versus["p_value"] is not None
    assert versus["notes"] == ["no lift: A has no carted exposures (a ratio to 0)"]
    lines = render(report)
    assert "cart rate [95% CI]" in lines[3] and "cart rate lift vs A [95% CI]" in lines[3]
    assert "+1.20 points" in lines[5]
    assert "B vs A: +1.20 points cart rate (control 0), interval excludes 0" in lines
