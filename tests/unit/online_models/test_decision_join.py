"""``join_decisions``: logged decisions and the reward events that name them, without services."""

from __future__ import annotations

import pytest

from online_models.off_policy import JoinCounts, evaluate_logging_policy, join_decisions, logged_rows
from schemas.events import Decision, Event, EventType


def _impression(request_id: str, arm: str = "a", p: float = 0.5, t: int = 0, policy: str = "ts") -> Event:
    return Event(event_id=f"{request_id}-imp-{t}", type=EventType.IMPRESSION, user_id="u", item_id=arm,
                 event_time_ms=t, decision=Decision(request_id=request_id, policy=policy, arm=arm, propensity=p))


def _reward(request_id: str | None, kind: EventType = EventType.CLICK, t: int = 1) -> Event:
    context = {} if request_id is None else {"request_id": request_id}
    return Event(event_id=f"{request_id}-{kind.value}-{t}", type=kind, user_id="u", item_id="a", event_time_ms=t,
                 context=context)


def _rewards(log: object) -> list[tuple[str, float]]:
    return [(row.impression.decision.request_id, row.reward) for row in log.rows]  # type: ignore[attr-defined]


def test_missing_rewards_are_zero_and_rewards_join_in_any_order() -> None:
    events = [_reward("r2"), _impression("r1"), _impression("r2"), _impression("r3"), _reward("r3", t=9)]
    log = join_decisions(events)
    assert _rewards(log) == [("r1", 0.0), ("r2", 1.0), ("r3", 1.0)]
    assert log.rewarded == 2
    assert log.counts == JoinCounts(duplicate_impressions=0, reward_events=2, unknown_decision=0, no_request_id=0)


def test_rewards_for_unknown_decisions_or_none_are_counted_and_ignored() -> None:
    events = [_impression("r1"), _reward("nope"), _reward("nope", t=2), _reward(None), _reward("r1")]
    log = join_decisions(events)
    assert _rewards(log) == [("r1", 1.0)]
    assert log.counts == JoinCounts(duplicate_impressions=0, reward_events=1, unknown_decision=2, no_request_id=1)


def test_duplicates_count_once() -> None:
    """A repeated impression keeps the first; several rewards on one decision are one reward of 1."""
    events = [_impression("r1", arm="a", p=0.25), _impression("r1", arm="b", p=0.75, t=5),
              _reward("r1"), _reward("r1", t=2), _reward("r1", EventType.PURCHASE, t=3)]
    log = join_decisions(events, frozenset({EventType.CLICK, EventType.PURCHASE}))
    assert [(row.arm, row.propensity, row.reward) for row in log.rows] == [("a", 0.25, 1.0)]
    assert log.counts == JoinCounts(duplicate_impressions=1, reward_events=3, unknown_decision=0, no_request_id=0)


def test_reward_types_choose_what_rewards() -> None:
    events = [_impression("r1"), _impression("r2"), _reward("r1", EventType.ADD_TO_CART),
              _reward("r2", EventType.VIEW), _reward(None, EventType.PURCHASE)]
    assert _rewards(join_decisions(events)) == [("r1", 0.0), ("r2", 0.0)]  # clicks only, by default
    carts = join_decisions(events, frozenset({EventType.ADD_TO_CART, EventType.PURCHASE}))
    assert _rewards(carts) == [("r1", 1.0), ("r2", 0.0)]
    assert carts.counts.no_request_id == 1  # the purchase naming no decision; the view is no reward type
    assert logged_rows(events) == join_decisions(events).rows


def test_impressions_without_a_decision_are_not_decisions() -> None:
    plain = Event(event_id="e", type=EventType.IMPRESSION, user_id="u", item_id="a", event_time_ms=0)
    log = join_decisions([plain, _reward("e")])
    assert log.rows == [] and log.counts.unknown_decision == 1


def test_the_logging_policy_estimates_its_own_ctr() -> None:
    """w = 1: IPW = SNIPS = DR = CTR, with the CTR's normal interval (whatever the propensities)."""
    events = []
    for i in range(400):
        events.append(_impression(f"r{i}", arm="abc"[i % 3], p=(0.2, 0.5, 0.3)[i % 3], t=i))
        if i % 5 == 0 or i % 3 == 2:
            events.append(_reward(f"r{i}", t=i + 1))
    report = evaluate_logging_policy(join_decisions(events).rows)
    ctr = report.logged_ctr
    se = (ctr * (1 - ctr) / (report.n - 1)) ** 0.5
    for estimate in (report.ipw, report.snips, report.dr):
        assert estimate.value == pytest.approx(ctr)
        assert estimate.stderr == pytest.approx(se, rel=1e-9)
        assert estimate.low < ctr < estimate.high
    assert report.n == 400 and report.n_scopes == 0
