"""The policy's arm distribution per arm table, cached, and the seeded choice from it.

A decision needs the probability that the policy chooses each candidate arm given the arm table
the job wrote. That depends only on the policy, its hyperparameters, the candidate arms and their
statistics (for ``ucb``/``egreedy`` also the table's total pulls), so it is computed once per such
content and kept in a small LRU: the key *is* the content that determines the distribution, so
a new table version (or the same version read twice) can never be served a stale entry, and a
version that did not change the requested arms' statistics reuses it.

- ``ts``: the exact Beta win probabilities (:func:`online_models.bandits.distribution.beta_win_probabilities`).
- ``ucb`` / ``egreedy``: the learner's closed form (``arm_probabilities``), plus the tied best
  arms and the current epsilon that its ``pull`` draws with.

:meth:`ArmDistribution.choose` picks with a request's seed: ``ts`` by inverse CDF of
:func:`~online_models.bandits.distribution.uniform_from_seed` (no generator is built), ``ucb`` and
``egreedy`` exactly as the job's learner restored with that seed pulls (a numpy generator from
``SeedSequence(seed, spawn_key=(0, 0))``, built only when the draw needs one). The propensity is
the cached probability of the chosen arm, i.e. exactly the probability the choice had.

>>> cache = ArmDistributionCache(max_entries=2)
>>> d = cache.get("ts", ("a", "b"), ((0.0, 0.0), (0.0, 0.0)), (1.0, 1.0), 0.0)
>>> d.probabilities, cache.get("ts", ("a", "b"), ((0.0, 0.0), (0.0, 0.0)), (1.0, 1.0), 0.0) is d
((0.5, 0.5), True)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from online_models.bandits.base import tied_argmax
from online_models.bandits.distribution import beta_win_probabilities, choose, epsilon_greedy_draw, uniform_from_seed
from online_models.bandits.mab import UCB, EpsilonGreedy

__all__ = ["ArmDistribution", "ArmDistributionCache", "Stats", "rng_for"]

#: Per candidate arm, the two numbers of the arm table (ts: successes, failures; ucb/egreedy: pulls, reward_sum).
Stats = tuple[tuple[float, float], ...]


def rng_for(seed: int) -> np.random.Generator:
    """The generator a fresh ``online_models`` bandit with ``seed`` uses for its first pull."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, 0)))


@dataclass(frozen=True, slots=True)
class ArmDistribution:
    """Probability that ``policy`` chooses each candidate arm (in the request's order), and how it draws."""

    policy: str
    probabilities: tuple[float, ...]
    best: tuple[int, ...] = ()
    epsilon: float = 0.0

    def choose(self, seed: int) -> tuple[int, float]:
        """Index of the chosen arm and its propensity, determined by ``seed``."""
        if self.policy == "ucb":
            best = self.best
            index = best[0] if len(best) == 1 else best[int(rng_for(seed).integers(len(best)))]
        elif self.policy == "egreedy":
            index = epsilon_greedy_draw(len(self.probabilities), self.best, self.epsilon, rng_for(seed))
        else:
            index = choose(self.probabilities, uniform_from_seed(seed))
        return index, self.probabilities[index]


def thompson_distribution(stats: Stats, prior: tuple[float, float]) -> ArmDistribution:
    """Thompson sampling's exact arm distribution for Beta(prior + successes, prior + failures) posteriors."""
    params = [(prior[0] + successes, prior[1] + failures) for successes, failures in stats]
    return ArmDistribution("ts", tuple(beta_win_probabilities(params)))


def ucb_distribution(arms: tuple[str, ...], stats: Stats, n_updates: int, c: float) -> ArmDistribution:
    """UCB's: uniform over the arms with the largest upper bound (ties in the request's order)."""
    bandit = UCB.from_arm_table(dict(zip(arms, stats, strict=True)), n_updates=n_updates, c=c)
    probabilities = bandit.arm_probabilities(arms)
    best = tuple(arms.index(arm) for arm in tied_argmax(bandit.upper_bounds(arms)))
    return ArmDistribution("ucb", tuple(probabilities[arm] for arm in arms), best)


def epsilon_greedy_distribution(
    arms: tuple[str, ...], stats: Stats, n_updates: int, epsilon: float, decay: float
) -> ArmDistribution:
    """Epsilon-greedy's closed form, with the tied best arms and the decayed epsilon its draw uses."""
    bandit = EpsilonGreedy.from_arm_table(dict(zip(arms, stats, strict=True)), n_updates=n_updates,
                                          epsilon=epsilon, decay=decay)
    probabilities = bandit.arm_probabilities(arms)
    best = tuple(arms.index(arm) for arm in tied_argmax(bandit.means(arms)))
    return ArmDistribution("egreedy", tuple(probabilities[arm] for arm in arms), best, bandit.current_epsilon)


_Key = tuple[str, tuple[str, ...], Stats, tuple[float, ...], float]


class ArmDistributionCache:
    """LRU of :class:`ArmDistribution` by everything that determines it; ``hits``/``misses`` count lookups."""

    def __init__(self, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries is at least 1")
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[_Key, ArmDistribution] = OrderedDict()

    def get(
        self, policy: str, arms: tuple[str, ...], stats: Stats, hyperparameters: tuple[float, ...], n_updates: float
    ) -> ArmDistribution:
        """The distribution of ``policy`` over ``arms`` with ``stats``.

        ``hyperparameters``: ts ``(prior_alpha, prior_beta)``, ucb ``(c,)``, egreedy ``(epsilon, decay)``;
        ``n_updates``: the table's total pulls (ucb/egreedy; ignored by ts).
        """
        key = (policy, arms, stats, hyperparameters, n_updates if policy != "ts" else 0.0)
        entry = self._entries.get(key)
        if entry is not None:
            self.hits += 1
            self._entries.move_to_end(key)
            return entry
        self.misses += 1
        entry = _COMPUTE[policy](arms, stats, hyperparameters, round(n_updates))
        self._entries[key] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return entry


_COMPUTE: dict[str, Callable[[tuple[str, ...], Stats, tuple[float, ...], int], ArmDistribution]] = {
    "ts": lambda arms, stats, hyper, n: thompson_distribution(stats, (hyper[0], hyper[1])),
    "ucb": lambda arms, stats, hyper, n: ucb_distribution(arms, stats, n, *hyper),
    "egreedy": lambda arms, stats, hyper, n: epsilon_greedy_distribution(arms, stats, n, *hyper),
}
