"""Bandits: equivalence with River's policies, propensities, reproducible randomness, bytes."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from river import bandit as river_bandit
from river import linear_model, proba

from online_models.bandits import (
    UCB,
    Bandit,
    EpsilonGreedy,
    LinUCB,
    ThompsonSampling,
    bandit_state_sizes,
    make_bandit,
)

ARMS = ["a", "b", "c", "d", "e"]


def _all_bandits(seed: int = 0) -> list[Bandit]:
    return [
        ThompsonSampling(n_draws=200, seed=seed),
        UCB(c=0.7, seed=seed),
        EpsilonGreedy(epsilon=0.2, seed=seed),
        LinUCB(alpha=0.5, n_features=8, seed=seed),
    ]


def _context(i: int) -> dict[str, str]:
    return {"segment": "men" if i % 2 else "women", "position": str(i % 3 + 1)}


# -- equivalence with River -------------------------------------------------------------------


def test_ucb_makes_rivers_choices() -> None:
    """Same updates -> same arm as river.bandit.UCB(delta=c) wherever River has no tie to break."""
    ours, theirs = UCB(c=0.3), river_bandit.UCB(delta=0.3, seed=1)
    rng = random.Random(5)
    true_means = {arm: 0.2 * k for k, arm in enumerate(ARMS)}
    for arm in ARMS:  # every arm once: from then on River's bounds are finite and distinct
        reward = rng.random()
        ours.update(arm, reward)
        theirs.update(arm, reward)
    for _ in range(300):
        decision = ours.pull(ARMS)
        assert decision.arm == theirs.pull(ARMS)
        assert decision.propensity == 1.0
        reward = true_means[decision.arm] + rng.random()
        ours.update(decision.arm, reward)
        theirs.update(decision.arm, reward)
    for arm in ARMS:
        n, total = ours._stats[arm]
        assert total / n == pytest.approx(theirs._rewards[arm].get(), rel=1e-12)
        assert n == theirs._counts[arm]


def test_thompson_posteriors_are_rivers_beta() -> None:
    ours = ThompsonSampling()
    theirs = river_bandit.ThompsonSampling(reward_obj=proba.Beta(1, 1), seed=3)
    rng = random.Random(2)
    for _ in range(200):
        arm, reward = rng.choice(ARMS), float(rng.random() < 0.3)
        ours.update(arm, reward)
        theirs.update(arm, reward)
    for arm in ARMS:
        river_beta = theirs._rewards[arm]
        assert ours.posterior(arm) == (river_beta.alpha, river_beta.beta)


def test_epsilon_greedy_means_and_greedy_choice_are_rivers() -> None:
    ours, theirs = EpsilonGreedy(epsilon=0.0), river_bandit.EpsilonGreedy(epsilon=0.0, seed=4)
    rng = random.Random(3)
    for _ in range(200):
        arm = rng.choice(ARMS)
        reward = rng.random()
        ours.update(arm, reward)
        theirs.update(arm, reward)
        if all(a in ours._stats for a in ARMS):  # no unpulled (all-zero) ties left
            assert ours.pull(ARMS).arm == theirs.pull(ARMS)
    means = ours.means(ARMS)
    for arm in ARMS:
        assert means[arm] == pytest.approx(theirs._rewards[arm].get(), rel=1e-12)


def test_linucb_estimates_are_rivers_bayesian_linear_regression() -> None:
    """theta.x and x'A^-1x equal BayesianLinearRegression(alpha=1, beta=1)'s mean and variance - 1."""
    ours = LinUCB(ridge=1.0, n_features=8)
    regressions = {arm: linear_model.BayesianLinearRegression(alpha=1, beta=1) for arm in ARMS}
    rng = random.Random(8)
    for i in range(120):
        arm, context = rng.choice(ARMS), _context(i)
        reward = float(rng.random() < (0.6 if arm == "a" and context["segment"] == "men" else 0.2))
        ours.update(arm, reward, context)
        x = ours.featurize(context)
        regressions[arm].learn_one(dict(enumerate(x.tolist())), reward)
    for i in range(6):
        context = _context(i)
        x = dict(enumerate(ours.featurize(context).tolist()))
        for arm, (mean, width) in ours.estimates(ARMS, context).items():
            dist = regressions[arm].predict_one(x, with_dist=True)
            assert mean == pytest.approx(dist.mu, rel=1e-9, abs=1e-12)
            _, _, covariance = regressions[arm]._get_arrays(list(x), m=False, ss=False)
            x_arr = np.array(list(x.values()))
            assert width == pytest.approx(float(x_arr @ covariance @ x_arr), rel=1e-9, abs=1e-12)
            # River 0.23 hands the predictive *std* to Var._from_state, which takes a variance,
            # so its Gaussian's sigma is (1/beta + x'Sx) ** (1/4): what LinUCBDisjoint adds to mu.
            assert dist.sigma**4 - 1.0 == pytest.approx(width, rel=1e-9, abs=1e-12)


# -- propensities -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make", [lambda: UCB(c=0.5), lambda: EpsilonGreedy(epsilon=0.3), lambda: LinUCB(alpha=0.5, n_features=8)]
)
def test_closed_form_propensity_is_the_probability_of_the_chosen_arm(make: object) -> None:
    learner = make()  # type: ignore[operator]
    rng = random.Random(1)
    for i in range(80):
        context = _context(i)
        probabilities = learner.arm_probabilities(ARMS, context)
        assert sum(probabilities.values()) == pytest.approx(1.0)
        decision = learner.pull(ARMS, context)
        assert decision.propensity == pytest.approx(probabilities[decision.arm])
        learner.update(rng.choice(ARMS), float(rng.random() < 0.3), context)


def test_epsilon_greedy_closed_form() -> None:
    learner = EpsilonGreedy(epsilon=0.25)
    learner.update("a", 1.0)
    learner.update("b", 1.0)
    learner.update("c", 0.0)
    # a and b tie for the best mean: (1 - 0.25) / 2 + 0.25 / 4 = 0.4375; c, d: 0.25 / 4
    assert learner.arm_probabilities(["a", "b", "c", "d"]) == {"a": 0.4375, "b": 0.4375, "c": 0.0625, "d": 0.0625}


def test_epsilon_greedy_decay_matches_river() -> None:
    ours, theirs = EpsilonGreedy(epsilon=0.5, decay=0.01), river_bandit.EpsilonGreedy(epsilon=0.5, decay=0.01)
    for _ in range(37):
        ours.update("a", 1.0)
        theirs.update("a", 1.0)
    assert ours.current_epsilon == pytest.approx(theirs.current_epsilon)


@pytest.mark.parametrize("make", [lambda: EpsilonGreedy(epsilon=0.4), lambda: ThompsonSampling(n_draws=500)])
def test_pull_frequencies_follow_the_propensities(make: object) -> None:
    """Many pulls from one state (no updates): chosen shares within 5 sd of the probabilities."""
    learner = make()  # type: ignore[operator]
    for arm, (wins, losses) in {"a": (3, 7), "b": (5, 5), "c": (1, 9)}.items():
        for _ in range(wins):
            learner.update(arm, 1.0)
        for _ in range(losses):
            learner.update(arm, 0.0)
    arms = ["a", "b", "c"]
    expected = learner.arm_probabilities(arms)
    n = 4000
    decisions = [learner.pull(arms) for _ in range(n)]
    for arm in arms:
        share = sum(d.arm == arm for d in decisions) / n
        sd = math.sqrt(expected[arm] * (1 - expected[arm]) / n)
        assert abs(share - expected[arm]) < 5 * sd + 0.02  # + Monte-Carlo error of TS's estimate


def _beta_pdf(x: np.ndarray, a: float, b: float) -> np.ndarray:
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    return np.exp(log_norm + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x))


def test_thompson_propensity_matches_numerical_integration() -> None:
    """P(arm a wins) = integral of f_a(x) F_b(x) dx; the Monte-Carlo share is within 5 sd."""
    learner = ThompsonSampling(n_draws=20_000, seed=9)
    for reward in (1, 1, 0, 0, 0):
        learner.update("a", float(reward))
    for reward in (1, 0, 0, 0, 0, 0, 0):
        learner.update("b", float(reward))
    grid = np.linspace(1e-6, 1 - 1e-6, 200_001)
    step = grid[1] - grid[0]
    f_a = _beta_pdf(grid, *learner.posterior("a"))
    cdf_b = np.cumsum(_beta_pdf(grid, *learner.posterior("b"))) * step
    exact = float(np.sum(f_a * cdf_b) * step)
    estimate = learner.arm_probabilities(["a", "b"])["a"]
    assert abs(estimate - exact) < 5 * math.sqrt(exact * (1 - exact) / 20_000)


def test_thompson_propensity_is_exact_for_identical_posteriors() -> None:
    learner = ThompsonSampling(n_draws=10)
    learner.update("x", 1.0)
    probabilities = learner.arm_probabilities(["a", "b", "c", "x"])
    assert probabilities["a"] == probabilities["b"] == probabilities["c"]
    assert sum(probabilities.values()) == pytest.approx(1.0)


# -- randomness and bytes -----------------------------------------------------------------


@pytest.mark.parametrize("index", range(4))
def test_restored_state_continues_the_same_decisions(index: int) -> None:
    def play(learner: Bandit, start: int, stop: int) -> list[tuple[str, float]]:
        out = []
        for i in range(start, stop):
            decision = learner.pull(ARMS, _context(i))
            out.append((decision.arm, decision.propensity))
            learner.update(decision.arm, float(i % 3 == 0), _context(i))
        return out

    original = _all_bandits(seed=21)[index]
    play(original, 0, 25)
    blob = original.to_bytes()
    restored = type(original).from_bytes(blob)
    assert restored.to_bytes() == blob
    assert play(restored, 25, 60) == play(original, 25, 60)


def test_an_update_counted_n_times_is_n_updates() -> None:
    for together, one_each in zip(_all_bandits(seed=5), _all_bandits(seed=5), strict=True):
        together.update("a", 0.0, _context(3), count=4)
        for _ in range(4):
            one_each.update("a", 0.0, _context(3))
        assert together.to_bytes() == one_each.to_bytes(), type(together).__name__
        assert together.pull(ARMS, _context(4)) == one_each.pull(ARMS, _context(4))
    with pytest.raises(ValueError, match="count is at least 1"):
        UCB().update("a", 1.0, count=0)


def test_seed_drives_thompson_choices() -> None:
    def arms(seed: int) -> list[str]:
        learner = ThompsonSampling(n_draws=16, seed=seed)
        return [learner.pull(ARMS).arm for _ in range(40)]

    assert arms(1) == arms(1)
    assert arms(1) != arms(2)


def test_arm_probabilities_do_not_change_the_state() -> None:
    for learner in _all_bandits():
        learner.update("a", 1.0, _context(0))
        before = learner.to_bytes()
        learner.arm_probabilities(ARMS, _context(1))
        assert learner.to_bytes() == before


def test_bad_bytes_fail_loudly() -> None:
    blob = UCB().to_bytes()
    with pytest.raises(ValueError, match="state tag"):
        ThompsonSampling.from_bytes(blob)
    with pytest.raises(ValueError, match="trailing"):
        UCB.from_bytes(blob + b"\0")


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError, match="reward in"):
        ThompsonSampling().update("a", 2.0)
    with pytest.raises(ValueError, match="at least one arm"):
        UCB().pull([])
    with pytest.raises(ValueError, match="distinct"):
        UCB().pull(["a", "a"])
    with pytest.raises(ValueError, match="unknown policy"):
        make_bandit("exp3")


def test_state_sizes_grow_with_arms_not_with_updates() -> None:
    sizes = bandit_state_sizes(n_arms=34)
    # header 5 + hyperparameters + counters 16 + count 4 + per arm (2 + id + 16)
    assert sizes["ts"] == 5 + 28 + 16 + 4 + 34 * 18 + 10 * 1 + 24 * 2  # ids '0'..'33'
    learner = UCB()
    for _ in range(3):
        for arm in ARMS:
            learner.update(arm, 1.0)
        assert len(learner.to_bytes()) == 5 + 16 + 16 + 4 + len(ARMS) * 19
