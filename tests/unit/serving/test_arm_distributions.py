"""Cached arm distributions: exact propensities, and decisions recomputed from their request ids."""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy import special

from online_models.bandits import UCB, EpsilonGreedy, ThompsonSampling
from online_models.bandits.distribution import beta_win_probabilities, choose, uniform_from_seed
from schemas.redis_keys import Envelope
from serving.arm_distributions import ArmDistributionCache
from serving.decisions import Decider, DecisionPolicy
from serving.models import DecisionRequest

T0 = 1_700_000_000_000
MC_DRAWS = 1_000_000


def _miller(a: tuple[int, int], b: tuple[int, int]) -> float:
    """P(draw of Beta(b) > draw of Beta(a)) in closed form for an integer alpha of b (Evan Miller)."""
    (alpha_a, beta_a), (alpha_b, beta_b) = a, b
    return sum(
        math.exp(special.betaln(alpha_a + i, beta_a + beta_b) - math.log(beta_b + i)
                 - special.betaln(1 + i, beta_b) - special.betaln(alpha_a, beta_a))
        for i in range(alpha_b)
    )


@pytest.mark.parametrize(("a", "b"), [((1, 1), (2, 1)), ((31, 71), (51, 51)), ((3, 40), (5, 60)), ((200, 10), (7, 1))])
def test_cached_ts_propensity_equals_the_closed_form_for_two_arms(a: tuple[int, int], b: tuple[int, int]) -> None:
    cache = ArmDistributionCache()
    stats = ((a[0] - 1.0, a[1] - 1.0), (b[0] - 1.0, b[1] - 1.0))  # prior Beta(1, 1)
    distribution = cache.get("ts", ("a", "b"), stats, (1.0, 1.0), 0.0)
    assert distribution.probabilities[1] == pytest.approx(_miller(a, b), abs=1e-9)
    assert distribution.probabilities[0] == pytest.approx(1.0 - _miller(a, b), abs=1e-9)
    assert cache.get("ts", ("a", "b"), stats, (1.0, 1.0), 0.0) is distribution and cache.misses == 1


@pytest.mark.parametrize("params", [
    [(31.0, 71.0), (51.0, 51.0), (6.0, 96.0)],
    [(2.5, 3.0), (3.0, 2.5), (1.0, 1.0), (40.0, 38.5), (0.5, 0.6)],
    [(1.0 + k % 4, 1.0 + k % 3) for k in range(12)],
])
def test_cached_ts_propensity_is_within_the_error_of_a_million_draws(params: list[tuple[float, float]]) -> None:
    table = np.array(params)
    draws = np.random.default_rng(2024).beta(table[:, 0], table[:, 1], size=(MC_DRAWS, len(params)))
    shares = np.bincount(draws.argmax(axis=1), minlength=len(params)) / MC_DRAWS
    stats = tuple((alpha - 0.5, beta - 0.25) for alpha, beta in params)  # prior Beta(0.5, 0.25)
    exact = np.array(ArmDistributionCache().get("ts", tuple(map(str, range(len(params)))), stats, (0.5, 0.25), 0.0)
                     .probabilities)
    sigma = np.sqrt(np.maximum(exact * (1 - exact), 1e-12) / MC_DRAWS)
    assert np.all(np.abs(exact - shares) <= 5 * sigma), (exact, shares)
    assert exact.sum() == pytest.approx(1.0, abs=1e-12)
    assert ThompsonSampling(prior_alpha=0.5, prior_beta=0.25).win_probabilities(["x"]) == {"x": 1.0}


def test_identical_posteriors_share_exactly_and_hopeless_arms_get_zero() -> None:
    assert beta_win_probabilities([(3.0, 4.0)] * 5) == [0.2] * 5
    first, second, third = beta_win_probabilities([(3.0, 4.0), (91.0, 11.0), (3.0, 4.0)])
    assert first == third > 0 and second == pytest.approx(1 - 2 * first, abs=1e-15)
    assert beta_win_probabilities([(91.0, 11.0), (2.0, 100.0)]) == [1.0, 0.0]


def _restored(cls: Any, table: dict[str, tuple[float, float]], seed: int = 0, **hyper: float) -> Any:
    return cls.from_arm_table(table, n_updates=round(sum(pulls for pulls, _ in table.values())), seed=seed, **hyper)


def test_cached_ucb_and_epsilon_greedy_propensities_equal_the_closed_forms() -> None:
    table = {"a": (4.0, 1.0), "b": (3.0, 3.0), "c": (1.0, 0.0), "d": (2.0, 2.0)}
    arms = ("a", "b", "c", "d", "new")
    stats = tuple(table.get(arm, (0.0, 0.0)) for arm in arms)
    n = sum(pulls for pulls, _ in table.values())
    cache = ArmDistributionCache()
    ucb = cache.get("ucb", arms[:4], stats[:4], (0.5,), n)
    expected = _restored(UCB, table, c=0.5).arm_probabilities(list(arms[:4]))
    assert ucb.probabilities == pytest.approx(tuple(expected.values()), abs=1e-9)
    assert cache.get("ucb", arms, stats, (0.5,), n).probabilities == (0.0, 0.0, 0.0, 0.0, 1.0)  # unpulled wins
    egreedy = cache.get("egreedy", arms, stats, (0.3, 0.01), n)
    expected = _restored(EpsilonGreedy, table, epsilon=0.3, decay=0.01).arm_probabilities(list(arms))
    assert egreedy.probabilities == pytest.approx(tuple(expected.values()), abs=1e-9)
    assert sum(egreedy.probabilities) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 7, 2**63 + 5, 2**64 - 1])
def test_the_seed_uniform_is_blake2b_of_the_seed_bytes(seed: int) -> None:
    """Logged decisions are replayed from their request ids: the number a seed gives never changes."""
    digest = hashlib.blake2b(seed.to_bytes(8, "little"), digest_size=8, person=b"pulse-arm").digest()
    assert uniform_from_seed(seed) == (int.from_bytes(digest, "little") >> 11) * 2.0**-53


def test_the_seeded_choice_draws_from_the_distribution() -> None:
    probabilities = (0.1, 0.0, 0.6, 0.3)
    counts = np.bincount([choose(probabilities, uniform_from_seed(seed)) for seed in range(20_000)], minlength=4)
    assert counts[1] == 0
    assert np.allclose(counts / 20_000, probabilities, atol=0.015)


class _Store:
    """The one read the decider makes: the arm tables of a policy per scope."""

    def __init__(self, policy: str, payload: dict[str, Any]) -> None:
        self.envelope = Envelope({"policy": policy, "scope": "global", **payload}, T0, T0 + 5, "mf-v1")

    async def bandits(self, policy: str, scope_keys: Sequence[str]) -> list[Envelope | None]:
        return [self.envelope if key == "global" else None for key in scope_keys]


_TABLES = {
    "ts": {"arms": {"a": [30.0, 70.0], "b": [50.0, 50.0], "c": [5.0, 95.0], "d": [48.0, 47.0]},
           "hyperparameters": {"prior_alpha": 1.0, "prior_beta": 1.0}},
    "ucb": {"arms": {"a": [4.0, 1.0], "b": [3.0, 3.0], "c": [0.0, 0.0], "d": [0.0, 0.0]},
            "hyperparameters": {"c": 0.5}},
    "egreedy": {"arms": {"a": [4.0, 1.0], "b": [3.0, 3.0], "c": [1.0, 0.0]},
                "hyperparameters": {"epsilon": 0.3, "decay": 0.0}},
}


@pytest.mark.parametrize("policy", sorted(_TABLES))
@pytest.mark.parametrize("control_share", [0.0, 1.0])
def test_a_logged_decision_is_recomputed_from_its_request_id(policy: str, control_share: float) -> None:
    """Replaying the logged request id on a fresh decider (cold cache) gives the same arm and propensity."""
    store = _Store(policy, _TABLES[policy])
    live = Decider(store, DecisionPolicy(bandit_policy=policy, control_share=control_share))  # type: ignore[arg-type]
    request = DecisionRequest(user_id="u1", decision_point="home")

    async def run() -> None:
        for _ in range(50):
            response = await live.decide(request, T0)
            event = response.impression()
            assert event.decision is not None and event.decision.request_id == response.request_id
            replay = Decider(store, DecisionPolicy(bandit_policy=policy, control_share=control_share))  # type: ignore[arg-type]
            again = await replay.decide(request, T0, request_id=event.decision.request_id)
            assert (again.arm, again.propensity, again.policy) == (event.decision.arm, event.decision.propensity,
                                                                    event.decision.policy)
            assert again.variant == response.variant

    asyncio.run(run())
    if control_share == 0.0:
        assert live.distributions.misses == 1 and live.distributions.hits == 49


def test_ucb_and_epsilon_greedy_decisions_are_what_the_restored_learner_pulls() -> None:
    for policy, cls, hyper in (("ucb", UCB, {"c": 0.5}), ("egreedy", EpsilonGreedy, {"epsilon": 0.3})):
        decider = Decider(_Store(policy, _TABLES[policy]), DecisionPolicy(bandit_policy=policy, control_share=0.0))  # type: ignore[arg-type]
        table = {arm: (pair[0], pair[1]) for arm, pair in _TABLES[policy]["arms"].items()}  # type: ignore[attr-defined]
        for _ in range(30):
            response = asyncio.run(decider.decide(DecisionRequest(user_id="u1", decision_point="home"), T0))
            pulled = _restored(cls, table, seed=int(response.request_id, 16) % 2**64, **hyper).pull(sorted(table))
            assert (response.arm, response.propensity) == (pulled.arm, pulled.propensity)
