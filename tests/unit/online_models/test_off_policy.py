from __future__ import annotations

import math
from pathlib import Path

import pytest

from online_models.bandits import UCB, BanditScope, EpsilonGreedy, ThompsonSampling
from online_models.off_policy import evaluate_policy, logged_rows, natural_order
from producers.sources.obd import read_obd
from schemas.events import Decision, Event, EventType
from tests.unit.online_models.obd_sample import EXPECTED_IPW, EXPECTED_SNIPS, LOGGED_CLICKS, write_sample


def _impression(i: int, arm: str, p: float, user: str = "u", segment: str = "s") -> Event:
    return Event(
        event_id=f"r{i}-imp",
        type=EventType.IMPRESSION,
        user_id=user,
        item_id=arm,
        event_time_ms=i,
        context={"segment": segment},
        decision=Decision(request_id=f"r{i}", policy="random", arm=arm, propensity=p),
    )


def _click(i: int, arm: str) -> Event:
    return Event(
        event_id=f"r{i}-click",
        type=EventType.CLICK,
        user_id="u",
        item_id=arm,
        event_time_ms=i + 1,
        value=1.0,
        context={"request_id": f"r{i}"},
    )


def test_ipw_matches_the_hand_computed_value(tmp_path: Path) -> None:
    rows = logged_rows(read_obd(write_sample(tmp_path)))
    report = evaluate_policy(rows, EpsilonGreedy(epsilon=0.2, seed=0))
    assert report.n == 5 and report.logged_clicks == LOGGED_CLICKS
    assert report.ipw.value == pytest.approx(EXPECTED_IPW, rel=1e-12)  # 0.665, see obd_sample.py
    assert report.snips.value == pytest.approx(EXPECTED_SNIPS, rel=1e-12)
    assert report.ipw.low < report.ipw.value < report.ipw.high


def test_logged_rows_join_clicks_by_request_id_in_any_order() -> None:
    events = [_click(1, "b"), _impression(0, "a", 0.5), _impression(1, "b", 0.5), _click(1, "b"), _click(99, "z")]
    rows = logged_rows(events)
    assert [(r.impression.decision.request_id, r.reward) for r in rows if r.impression.decision] == [
        ("r0", 0.0),
        ("r1", 1.0),
    ]


def test_evaluating_the_logging_policy_gives_its_ctr() -> None:
    """Uniform over K arms logged with propensity 1/K: w = 1, so IPW = SNIPS = CTR."""
    arms = ["a", "b", "c", "d"]
    events: list[Event] = []
    for i in range(200):
        arm = arms[(i * 3) % 4]
        events.append(_impression(i, arm, 0.25))
        if (i % 7 == 0) or arm == "c":
            events.append(_click(i, arm))
    report = evaluate_policy(logged_rows(events), EpsilonGreedy(epsilon=1.0))
    assert report.ipw.value == pytest.approx(report.logged_ctr)
    assert report.snips.value == pytest.approx(report.logged_ctr)
    assert report.dr.value == pytest.approx(report.logged_ctr, abs=0.02)
    assert report.snips.stderr == pytest.approx(report.ipw.stderr, rel=0.01)


def test_dr_with_one_fold_and_a_deterministic_policy() -> None:
    """DR = mean(q(pi's arm) + w (r - q(logged arm))) with q fitted on the whole log."""
    events = [_impression(0, "a", 0.5), _click(0, "a"), _impression(1, "b", 0.5), _impression(2, "a", 0.5)]
    rows = logged_rows(events)
    report = evaluate_policy(rows, UCB(c=0.0), folds=1, prior_weight=1.0)
    # q(a) = (1 + 1 * 1/3) / (2 + 1) = 4/9, q(b) = (0 + 1/3) / (1 + 1) = 1/6
    qa, qb = 4 / 9, 1 / 6
    # row 0: tie -> pi = (0.5, 0.5): 0.5 qa + 0.5 qb + 1.0 * (1 - qa)
    # row 1: a pulled, b not -> pi(b) = 1: qb + 2 * (0 - qb)
    # row 2: a mean 1, b mean 0 -> pi(a) = 1: qa + 2 * (0 - qa)
    terms = [0.5 * qa + 0.5 * qb + (1 - qa), qb - 2 * qb, qa - 2 * qa]
    assert report.dr.value == pytest.approx(sum(terms) / 3)


def test_scopes_keep_separate_states() -> None:
    events = [_impression(i, "ab"[i % 2], 0.5, user=f"u{i % 3}", segment=f"s{i % 2}") for i in range(12)]
    rows = logged_rows(events)
    assert evaluate_policy(rows, UCB(), scope=BanditScope.GLOBAL).n_scopes == 1
    assert evaluate_policy(rows, UCB(), scope=BanditScope.SEGMENT).n_scopes == 2
    assert evaluate_policy(rows, UCB(), scope=BanditScope.USER).n_scopes == 3


def test_same_seed_same_estimates_and_unknown_arms_rejected() -> None:
    events = [_impression(i, "abc"[i % 3], 1 / 3) for i in range(30)] + [_click(4, "b")]
    rows = logged_rows(events)
    first = evaluate_policy(rows, ThompsonSampling(n_draws=50, seed=3))
    second = evaluate_policy(rows, ThompsonSampling(n_draws=50, seed=3))
    assert first == second
    with pytest.raises(ValueError, match="not among"):
        evaluate_policy(rows, UCB(), arms=["a", "b"])


def test_empty_log() -> None:
    report = evaluate_policy([], UCB())
    assert report.n == 0 and math.isnan(report.ipw.value) and math.isnan(report.logged_ctr)


def test_natural_order() -> None:
    assert natural_order(["2", "10", "1"]) == ["1", "2", "10"]
