"""Off-policy evaluation of a bandit on logged decisions: IPW, SNIPS and doubly robust.

Rows come from the events the job sees (:func:`logged_rows` joins each ``impression`` that
carries a ``Decision`` with the ``click`` events naming its ``request_id``), so the
evaluation and the job read the same data.

**Sequential replay.** The evaluated bandit learns as it goes, as it would in production:
for row ``i`` (in log order), ``pi_i = policy.arm_probabilities(arms, context_i)`` is
computed from rows ``< i`` only, the estimator terms use ``pi_i``, and then the policy is
updated with the *logged* ``(arm_i, reward_i)``. Every logged row is learned from, whatever
the policy would have chosen (this is not Li et al.'s rejection replay, which keeps only the
rows where the policy agrees with the log). With a scope other than ``global`` every scope
key (:func:`online_models.bandits.scope_key`) gets its own ``policy.clone()``.

With ``w_i = pi_i(a_i) / p_i`` (``p_i`` the logged propensity):

- IPW  ``= mean(w_i r_i)``;
- SNIPS ``= sum(w_i r_i) / sum(w_i)``;
- DR ``= mean(sum_a pi_i(a) q(a) + w_i (r_i - q(a_i)))`` with ``q`` a per-arm mean reward
  shrunk toward the overall mean, ``(clicks_a + m * mean) / (shown_a + m)``, cross-fitted:
  the rows are split into ``folds`` by ``i % folds`` and row ``i`` uses the ``q`` fitted on
  the other folds (``folds=1`` fits ``q`` on the whole log).

**The logging policy itself** (:func:`evaluate_logging_policy`): ``pi = mu``, so ``w_i = 1``
and IPW = SNIPS = the observed CTR. The log records only the chosen arm's probability, not the
rest of ``mu``, so DR's direct term ``sum_a mu_i(a) q(a)`` is estimated by ``q(a_i)`` (unbiased:
``a_i ~ mu_i``) and DR is the CTR too; the interval is the CTR's, ``± 1.96 sd(r) / sqrt(n)``.

**Intervals** are 95 % normal approximations on the per-row terms: ``value ± 1.96 sd / sqrt(n)``
with the sample sd of ``w_i r_i`` (IPW), of the DR terms (DR), and for SNIPS of its
linearisation ``w_i (r_i - SNIPS) / mean(w)`` (delta method). Under sequential replay the
terms are martingale differences rather than independent, so read them as approximate.

>>> from online_models.bandits import EpsilonGreedy
>>> from schemas.events import Decision, Event, EventType
>>> def imp(i, arm, p, clicked):
...     d = Decision(request_id=f"r{i}", policy="random", arm=arm, propensity=p)
...     e = Event(event_id=f"r{i}-imp", type=EventType.IMPRESSION, user_id="u", item_id=arm,
...               event_time_ms=i, decision=d)
...     c = Event(event_id=f"r{i}-click", type=EventType.CLICK, user_id="u", item_id=arm,
...               event_time_ms=i, value=1.0, context={"request_id": f"r{i}"})
...     return [e, c] if clicked else [e]
>>> events = imp(0, "a", 0.5, True) + imp(1, "b", 0.5, False) + imp(2, "a", 0.5, True)
>>> rows = logged_rows(events)
>>> [(r.arm, r.reward) for r in rows]
[('a', 1.0), ('b', 0.0), ('a', 1.0)]
>>> report = evaluate_policy(rows, EpsilonGreedy(epsilon=1.0))   # uniform: w = 1 everywhere
>>> report.logged_clicks, report.logged_ctr, round(report.ipw.value, 4), round(report.snips.value, 4)
(2.0, 0.6666666666666666, 0.6667, 0.6667)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from online_models.bandits import Bandit, BanditScope, scope_key
from online_models.base import ArmId
from schemas.events import Event, EventType

__all__ = [
    "DecisionLog",
    "Estimate",
    "JoinCounts",
    "LoggedRow",
    "OffPolicyReport",
    "evaluate_logging_policy",
    "evaluate_policy",
    "join_decisions",
    "logged_rows",
]

Z95 = 1.959963984540054
#: Per-row values (weights, rewards, estimator terms).
Vector = np.ndarray[tuple[int], np.dtype[np.float64]]


@dataclass(frozen=True, slots=True)
class LoggedRow:
    """One logged decision: the impression event and the reward it earned (1.0 if clicked)."""

    impression: Event
    reward: float

    @property
    def arm(self) -> ArmId:
        """The logged arm."""
        assert self.impression.decision is not None
        return self.impression.decision.arm

    @property
    def propensity(self) -> float:
        """The logging policy's probability of the logged arm."""
        assert self.impression.decision is not None
        return self.impression.decision.propensity

    @property
    def context(self) -> dict[str, str]:
        """The impression's context."""
        return self.impression.context


@dataclass(frozen=True, slots=True)
class JoinCounts:
    """What :func:`join_decisions` found besides the rows."""

    #: Impressions whose request id an earlier impression already had (the first is kept).
    duplicate_impressions: int = 0
    #: Reward events naming a logged decision (several on one decision count as one reward).
    reward_events: int = 0
    #: Reward events naming a request id no logged decision has (ignored).
    unknown_decision: int = 0
    #: Reward events naming no request id at all (ignored: nothing says which decision caused them).
    no_request_id: int = 0


@dataclass(frozen=True, slots=True)
class DecisionLog:
    """Logged decisions with their rewards, and the join's counts."""

    rows: list[LoggedRow]
    counts: JoinCounts

    @property
    def rewarded(self) -> int:
        """Decisions with reward 1."""
        return sum(1 for row in self.rows if row.reward > 0)


def join_decisions(
    events: Iterable[Event], reward_types: frozenset[EventType] = frozenset({EventType.CLICK})
) -> DecisionLog:
    """Impressions that carry a ``Decision``, in order, each with reward 1.0 if a reward event names it.

    The rule: a reward event (a type in ``reward_types``) names a decision by ``context["request_id"]``,
    in any order relative to its impression; a decision named by one or more of them earns reward 1.0
    (binary: the bandits learn Bernoulli rewards), else 0.0. A repeated impression request id keeps
    the first impression; reward events naming an unknown request id, or none, are counted and ignored.
    """
    impressions: dict[str, Event] = {}
    duplicates = 0
    named: dict[str, int] = {}
    no_request_id = 0
    for event in events:
        if event.type is EventType.IMPRESSION and event.decision is not None:
            if event.decision.request_id in impressions:
                duplicates += 1
            else:
                impressions[event.decision.request_id] = event
        elif event.type in reward_types:
            request_id = event.context.get("request_id")
            if request_id:
                named[request_id] = named.get(request_id, 0) + 1
            else:
                no_request_id += 1
    rows = [LoggedRow(event, 1.0 if request_id in named else 0.0) for request_id, event in impressions.items()]
    joined = sum(n for request_id, n in named.items() if request_id in impressions)
    unknown = sum(named.values()) - joined
    return DecisionLog(rows, JoinCounts(duplicates, joined, unknown, no_request_id))


def logged_rows(events: Iterable[Event]) -> list[LoggedRow]:
    """Impressions with a decision, in order, each with reward 1.0 if a click names its request id.

    A click names its impression by ``context["request_id"]``; clicks naming no impression are
    ignored, and several clicks on one impression still count once (:func:`join_decisions`).
    """
    return join_decisions(events).rows


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy value with its standard error and 95 % interval."""

    value: float
    stderr: float
    low: float
    high: float

    @classmethod
    def normal(cls, value: float, terms: np.ndarray[tuple[int], np.dtype[np.float64]]) -> Estimate:
        """``value ± 1.96 sd(terms) / sqrt(n)``."""
        n = len(terms)
        stderr = float(np.std(terms, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        return cls(value=value, stderr=stderr, low=value - Z95 * stderr, high=value + Z95 * stderr)


@dataclass(frozen=True, slots=True)
class OffPolicyReport:
    """The logged policy's CTR and the evaluated policy's estimated value."""

    n: int
    logged_clicks: float
    ipw: Estimate
    snips: Estimate
    dr: Estimate
    n_scopes: int

    @property
    def logged_ctr(self) -> float:
        """Clicks per impression of the logging policy."""
        return self.logged_clicks / self.n if self.n else math.nan


def natural_order(arms: Iterable[ArmId]) -> list[ArmId]:
    """Distinct arms, numeric ids by value first, then the others.

    >>> natural_order(["10", "9", "b", "9", "a"])
    ['9', '10', 'a', 'b']
    """
    return sorted(set(arms), key=lambda a: (0, int(a), "") if a.isdigit() else (1, 0, a))


def _reward_model(
    rows: Sequence[LoggedRow], arms: Sequence[ArmId], folds: int, prior_weight: float
) -> np.ndarray[tuple[int, int], np.dtype[np.float64]]:
    """``q[f, k]``: the shrunk mean reward of ``arms[k]`` fitted without fold ``f``."""
    index = {arm: k for k, arm in enumerate(arms)}
    shown = np.zeros((folds, len(arms)))
    clicks = np.zeros((folds, len(arms)))
    for i, row in enumerate(rows):
        shown[i % folds, index[row.arm]] += 1.0
        clicks[i % folds, index[row.arm]] += row.reward
    if folds > 1:
        shown, clicks = shown.sum(axis=0) - shown, clicks.sum(axis=0) - clicks
    totals = shown.sum(axis=1, keepdims=True)
    overall = np.divide(clicks.sum(axis=1, keepdims=True), totals, out=np.zeros_like(totals), where=totals > 0)
    q: np.ndarray[tuple[int, int], np.dtype[np.float64]] = (clicks + prior_weight * overall) / (shown + prior_weight)
    return q


def evaluate_policy(
    rows: Sequence[LoggedRow],
    policy: Bandit,
    arms: Sequence[ArmId] | None = None,
    scope: BanditScope = BanditScope.GLOBAL,
    folds: int = 2,
    prior_weight: float = 1.0,
    on_row: Callable[[], None] | None = None,
) -> OffPolicyReport:
    """Replay ``rows`` through ``policy`` and estimate its value (see the module docstring).

    ``policy`` is used as given for the global scope and cloned fresh per key otherwise;
    ``arms`` default to the logged arms in :func:`natural_order`; ``on_row`` is called after
    each row (a progress bar's hook).
    """
    if folds < 1 or prior_weight <= 0:
        raise ValueError("folds is at least 1 and prior_weight positive")
    arm_list = natural_order(row.arm for row in rows) if arms is None else list(arms)
    unknown = {row.arm for row in rows} - set(arm_list)
    if unknown:
        raise ValueError(f"logged arms not among the evaluated arms: {sorted(unknown)[:5]}")
    n = len(rows)
    q = _reward_model(rows, arm_list, folds, prior_weight) if n else np.zeros((folds, len(arm_list)))
    index = {arm: k for k, arm in enumerate(arm_list)}
    weights = np.zeros(n)
    rewards = np.zeros(n)
    dr_terms = np.zeros(n)
    policies: dict[str, Bandit] = {}
    for i, row in enumerate(rows):
        key = scope_key(scope, row.impression)
        bandit = policies.get(key)
        if bandit is None:
            bandit = policies[key] = policy if scope is BanditScope.GLOBAL else policy.clone()
        probabilities = bandit.arm_probabilities(arm_list, row.context)
        pi = np.fromiter((probabilities[arm] for arm in arm_list), dtype=np.float64, count=len(arm_list))
        q_row = q[i % folds]
        k = index[row.arm]
        weights[i] = pi[k] / row.propensity
        rewards[i] = row.reward
        dr_terms[i] = float(pi @ q_row) + weights[i] * (row.reward - q_row[k])
        bandit.update(row.arm, row.reward, row.context)
        if on_row is not None:
            on_row()
    return _report(weights, rewards, dr_terms, n_scopes=len(policies))


def evaluate_logging_policy(rows: Sequence[LoggedRow]) -> OffPolicyReport:
    """The logging policy's own value: ``w_i = 1`` and DR's direct term at the logged arm (module docstring)."""
    rewards = np.fromiter((row.reward for row in rows), dtype=np.float64, count=len(rows))
    return _report(np.ones(len(rows)), rewards, rewards.copy(), n_scopes=0)


def _report(weights: Vector, rewards: Vector, dr_terms: Vector, n_scopes: int) -> OffPolicyReport:
    """IPW, SNIPS and DR with their intervals from the per-row weights, rewards and DR terms."""
    n = len(rewards)
    ipw_terms = weights * rewards
    ipw = float(ipw_terms.mean()) if n else math.nan
    mean_weight = float(weights.mean()) if n else math.nan
    snips = float(ipw_terms.sum() / weights.sum()) if n and weights.sum() > 0 else math.nan
    snips_terms = weights * (rewards - snips) / mean_weight if n and mean_weight > 0 else np.zeros(0)
    return OffPolicyReport(
        n=n,
        logged_clicks=float(rewards.sum()),
        ipw=Estimate.normal(ipw, ipw_terms),
        snips=Estimate.normal(snips, snips_terms),
        dr=Estimate.normal(float(dr_terms.mean()) if n else math.nan, dr_terms),
        n_scopes=n_scopes,
    )
