"""Context-free bandits: Thompson sampling, UCB1 and epsilon-greedy, with explicit per-arm state.

Each keeps two float64 sufficient statistics per arm, which is all River's policies keep
too (River's ``proba.Beta`` holds ``alpha``/``beta``; its ``stats.Mean`` holds a count and a
mean), so the policies below make River's choices while their state stays a small table we
serialise ourselves (``tests/unit/online_models/test_bandits.py`` checks the equivalence):

- :class:`ThompsonSampling` = ``river.bandit.ThompsonSampling(reward_obj=proba.Beta(a, b))``:
  per arm (successes, failures); for rewards in [0, 1] a reward ``r`` adds ``r`` to the
  successes and ``1 - r`` to the failures (River's Beta does the same for 0/1).
- :class:`UCB` = ``river.bandit.UCB(delta=c)``: per arm (pulls, reward sum); score
  ``mean + c * sqrt(2 ln n / pulls)`` with ``n`` all updates, ``+inf`` for an unpulled arm.
- :class:`EpsilonGreedy` = ``river.bandit.EpsilonGreedy(epsilon, decay)``, except that ties
  for the best mean are broken uniformly at random (River takes the first in ``arms``
  order), which makes the propensity ``(1 - eps) / n_tied + eps / K`` independent of the
  order in which the caller lists the arms.

Byte layout (little-endian): ``StateHeader`` (tag, version) | hyperparameters | pulls u64 |
updates u64 | arm count u32 | per arm: id (u16 length + UTF-8), two float64.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np

from online_models.bandits.base import (
    Bandit,
    BanditDecision,
    Context,
    check_consumed,
    pack_arm,
    pack_count,
    tied_argmax,
    unpack_arm,
    unpack_count,
)
from online_models.bandits.distribution import beta_win_probabilities, epsilon_greedy_draw
from online_models.base import ArmId, ContractCase, Learner, StateHeader
from schemas.events import Event, EventType

__all__ = ["UCB", "EpsilonGreedy", "ThompsonSampling"]

_PAIR = struct.Struct("<dd")


class _ArmTableBandit(Bandit):
    """A bandit whose learned state is two floats per arm; handles bytes and clone."""

    _HEADER: ClassVar[StateHeader]
    _HYPER: ClassVar[struct.Struct]

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self._stats: dict[ArmId, tuple[float, float]] = {}

    #: What the two numbers per arm mean (they are what serving needs to decide from Redis).
    STAT_NAMES: ClassVar[tuple[str, str]]

    def arm_table(self) -> dict[ArmId, tuple[float, float]]:
        """A copy of the per-arm statistics, named by :attr:`STAT_NAMES`."""
        return dict(self._stats)

    @classmethod
    def from_arm_table(
        cls, table: Mapping[ArmId, tuple[float, float]], n_updates: int, seed: int = 0, **hyperparameters: Any
    ) -> Self:
        """A bandit with ``table`` (an :meth:`arm_table`), ``n_updates`` updates and no pull yet.

        What serving restores from the arm table the job writes to Redis, to decide with ``seed``.

        >>> ucb = UCB(c=0.5); ucb.update("a", 1.0); ucb.update("b", 0.0)
        >>> again = UCB.from_arm_table(ucb.arm_table(), n_updates=2, c=0.5)
        >>> again.upper_bounds(["a", "b"]) == ucb.upper_bounds(["a", "b"])
        True
        """
        bandit = cls(seed=seed, **hyperparameters)
        bandit._stats = {arm: (float(first), float(second)) for arm, (first, second) in table.items()}
        bandit._updates = int(n_updates)
        return bandit

    def _hyper(self) -> tuple[Any, ...]:
        raise NotImplementedError

    @classmethod
    def _from_hyper(cls, values: tuple[Any, ...]) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Hyperparameters, counters and the per-arm table; see the module docstring."""
        parts = [
            self._HEADER.pack(self.STATE_VERSION),
            self._HYPER.pack(*self._hyper()),
            self._pack_counters(),
            pack_count(len(self._stats)),
        ]
        for arm, pair in self._stats.items():
            parts.append(pack_arm(arm))
            parts.append(_PAIR.pack(*pair))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild from :meth:`to_bytes` output."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        learner = cls._from_hyper(cls._HYPER.unpack_from(data, offset))
        offset = learner._unpack_counters(data, offset + cls._HYPER.size)
        n_arms, offset = unpack_count(data, offset)
        for _ in range(n_arms):
            arm, offset = unpack_arm(data, offset)
            learner._stats[arm] = _PAIR.unpack_from(data, offset)
            offset += _PAIR.size
        check_consumed(data, offset)
        return learner

    def clone(self) -> Self:
        """Same hyperparameters, no learned state."""
        return self._from_hyper(self._hyper())

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        return ContractCase(learner=cls._example(seed), stream=_contract_stream(), observe=_observe)

    @classmethod
    def _example(cls, seed: int) -> Self:
        raise NotImplementedError

    def _means(self, arms: Sequence[ArmId], unseen: float) -> dict[ArmId, float]:
        means = {}
        for arm in arms:
            n, total = self._stats.get(arm, (0.0, 0.0))
            means[arm] = total / n if n else unseen
        return means


class ThompsonSampling(_ArmTableBandit):
    """Beta-Bernoulli Thompson sampling; propensities by seeded Monte-Carlo.

    ``pull`` draws ``n_draws`` samples of every arm's Beta posterior; the chosen arm is the
    argmax of the first draw and its propensity is the share of the draws it wins (so it is
    never 0). Arms with the same posterior get the average share of their group, which is
    exact by symmetry (e.g. ``1/K`` before any update) and lowers the Monte-Carlo noise.

    >>> ts = ThompsonSampling(n_draws=2000, seed=7)
    >>> ts.pull(["a", "b"]).propensity
    0.5
    >>> for _ in range(20):
    ...     ts.update("a", 1.0)
    ...     ts.update("b", 0.0)
    >>> d = ts.pull(["a", "b"])
    >>> d.arm, d.propensity
    ('a', 1.0)
    >>> ts.arm_probabilities(["a", "b"])
    {'a': 1.0, 'b': 0.0}
    >>> {arm: round(p, 9) for arm, p in ts.win_probabilities(["a", "b"]).items()}   # exact: b wins 1.9e-12
    {'a': 1.0, 'b': 0.0}
    """

    STAT_NAMES = ("successes", "failures")

    _HEADER = StateHeader(b"BTS1")
    _HYPER = struct.Struct("<ddIQ")

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0, n_draws: int = 1000, seed: int = 0) -> None:
        super().__init__(seed)
        if prior_alpha <= 0 or prior_beta <= 0:
            raise ValueError("Beta prior parameters are positive")
        if not 1 <= n_draws < 2**32:
            raise ValueError("n_draws is at least 1")
        self.prior_alpha = prior_alpha
        self.prior_beta = prior_beta
        self.n_draws = n_draws

    def posterior(self, arm: ArmId) -> tuple[float, float]:
        """The (alpha, beta) of ``arm``'s Beta posterior."""
        successes, failures = self._stats.get(arm, (0.0, 0.0))
        return self.prior_alpha + successes, self.prior_beta + failures

    def arm_probabilities(self, arms: Sequence[ArmId], context: Context | None = None) -> dict[ArmId, float]:
        """Monte-Carlo share of ``n_draws`` posterior draws won by each arm."""
        _, probs = self._simulate(arms, self._probability_rng())
        return dict(zip(arms, probs.tolist(), strict=True))

    def win_probabilities(self, arms: Sequence[ArmId]) -> dict[ArmId, float]:
        """The exact probability that ``pull`` chooses each arm (quadrature, no Monte Carlo)."""
        return dict(zip(arms, beta_win_probabilities([self.posterior(arm) for arm in arms]), strict=True))

    def _choose(self, arms: Sequence[ArmId], context: Context | None, rng: np.random.Generator) -> BanditDecision:
        winners, probs = self._simulate(arms, rng)
        chosen = int(winners[0])
        return BanditDecision(arm=arms[chosen], propensity=float(probs[chosen]))

    def _simulate(
        self, arms: Sequence[ArmId], rng: np.random.Generator
    ) -> tuple[np.ndarray[Any, np.dtype[np.intp]], np.ndarray[Any, np.dtype[np.float64]]]:
        params = np.array([self.posterior(arm) for arm in arms], dtype=np.float64)
        draws = rng.beta(params[:, 0], params[:, 1], size=(self.n_draws, len(arms)))
        winners = np.argmax(draws, axis=1)
        shares = np.bincount(winners, minlength=len(arms)) / self.n_draws
        _, group = np.unique(params, axis=0, return_inverse=True)
        group = group.reshape(-1)
        group_mean = np.bincount(group, weights=shares) / np.bincount(group)
        return winners, group_mean[group]

    def _learn(self, arm: ArmId, reward: float, context: Context | None) -> None:
        if not 0.0 <= reward <= 1.0:
            raise ValueError(f"Beta-Bernoulli Thompson sampling needs a reward in [0, 1], got {reward}")
        successes, failures = self._stats.get(arm, (0.0, 0.0))
        self._stats[arm] = (successes + reward, failures + 1.0 - reward)

    def _hyper(self) -> tuple[Any, ...]:
        return (self.prior_alpha, self.prior_beta, self.n_draws, self.seed)

    @classmethod
    def _from_hyper(cls, values: tuple[Any, ...]) -> Self:
        prior_alpha, prior_beta, n_draws, seed = values
        return cls(prior_alpha=prior_alpha, prior_beta=prior_beta, n_draws=n_draws, seed=seed)

    @classmethod
    def _example(cls, seed: int) -> Self:
        return cls(n_draws=64, seed=seed)


class UCB(_ArmTableBandit):
    """UCB1-style upper confidence bound; deterministic up to ties (propensity ``1/n_tied``).

    >>> ucb = UCB(c=1.0, seed=0)
    >>> ucb.pull(["a", "b"]).propensity          # nothing pulled yet: a tie
    0.5
    >>> ucb.update("a", 1.0)
    >>> ucb.pull(["a", "b"])                     # an unpulled arm's bound is infinite
    BanditDecision(arm='b', propensity=1.0)
    >>> ucb.update("b", 0.0)
    >>> ucb.arm_probabilities(["a", "b"])
    {'a': 1.0, 'b': 0.0}
    """

    STAT_NAMES = ("pulls", "reward_sum")

    _HEADER = StateHeader(b"BUCB")
    _HYPER = struct.Struct("<dQ")

    def __init__(self, c: float = 1.0, seed: int = 0) -> None:
        super().__init__(seed)
        if c < 0:
            raise ValueError("c is non-negative")
        self.c = c

    def upper_bounds(self, arms: Sequence[ArmId]) -> dict[ArmId, float]:
        """``mean + c * sqrt(2 ln n / pulls)`` per arm, ``inf`` when unpulled (River's ``UCB._pull``)."""
        bounds = {}
        for arm in arms:
            n, total = self._stats.get(arm, (0.0, 0.0))
            bounds[arm] = total / n + self.c * math.sqrt(2 * math.log(self._updates) / n) if n else math.inf
        return bounds

    def arm_probabilities(self, arms: Sequence[ArmId], context: Context | None = None) -> dict[ArmId, float]:
        """Uniform over the arms with the largest upper bound, 0 elsewhere."""
        best = set(tied_argmax(self.upper_bounds(arms)))
        return {arm: 1.0 / len(best) if arm in best else 0.0 for arm in arms}

    def _choose(self, arms: Sequence[ArmId], context: Context | None, rng: np.random.Generator) -> BanditDecision:
        best = tied_argmax(self.upper_bounds(arms))
        arm = best[int(rng.integers(len(best)))] if len(best) > 1 else best[0]
        return BanditDecision(arm=arm, propensity=1.0 / len(best))

    def _learn(self, arm: ArmId, reward: float, context: Context | None) -> None:
        n, total = self._stats.get(arm, (0.0, 0.0))
        self._stats[arm] = (n + 1.0, total + reward)

    def _hyper(self) -> tuple[Any, ...]:
        return (self.c, self.seed)

    @classmethod
    def _from_hyper(cls, values: tuple[Any, ...]) -> Self:
        c, seed = values
        return cls(c=c, seed=seed)

    @classmethod
    def _example(cls, seed: int) -> Self:
        return cls(c=0.5, seed=seed)


class EpsilonGreedy(_ArmTableBandit):
    """Epsilon-greedy on per-arm mean rewards, with exact propensities.

    With ``eps = epsilon * exp(-decay * n_updates)``, ``K`` arms and ``n_tied`` arms sharing
    the best mean (an unpulled arm's mean is 0, as in River), an arm's probability is
    ``(1 - eps) / n_tied + eps / K`` if it is among the best, else ``eps / K``.

    >>> eg = EpsilonGreedy(epsilon=0.2, seed=3)
    >>> eg.update("a", 1.0)
    >>> eg.arm_probabilities(["a", "b"])
    {'a': 0.9, 'b': 0.1}
    >>> d = eg.pull(["a", "b"])
    >>> d.propensity == eg.arm_probabilities(["a", "b"])[d.arm]
    True
    """

    STAT_NAMES = ("pulls", "reward_sum")

    _HEADER = StateHeader(b"BEGR")
    _HYPER = struct.Struct("<ddQ")

    def __init__(self, epsilon: float = 0.1, decay: float = 0.0, seed: int = 0) -> None:
        super().__init__(seed)
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError("epsilon is in [0, 1]")
        if decay < 0:
            raise ValueError("decay is non-negative")
        self.epsilon = epsilon
        self.decay = decay

    @property
    def current_epsilon(self) -> float:
        """Epsilon after the decay (River's ``EpsilonGreedy.current_epsilon``)."""
        return self.epsilon * math.exp(-self._updates * self.decay) if self.decay else self.epsilon

    def means(self, arms: Sequence[ArmId]) -> dict[ArmId, float]:
        """Mean reward per arm, 0 for an unpulled arm."""
        return self._means(arms, unseen=0.0)

    def arm_probabilities(self, arms: Sequence[ArmId], context: Context | None = None) -> dict[ArmId, float]:
        """The closed form of the class docstring."""
        eps = self.current_epsilon
        best = set(tied_argmax(self.means(arms)))
        return {arm: (1.0 - eps) / len(best) * (arm in best) + eps / len(arms) for arm in arms}

    def _choose(self, arms: Sequence[ArmId], context: Context | None, rng: np.random.Generator) -> BanditDecision:
        best = [arms.index(arm) for arm in tied_argmax(self.means(arms))]
        arm = arms[epsilon_greedy_draw(len(arms), best, self.current_epsilon, rng)]
        return BanditDecision(arm=arm, propensity=self.arm_probabilities(arms)[arm])

    def _learn(self, arm: ArmId, reward: float, context: Context | None) -> None:
        n, total = self._stats.get(arm, (0.0, 0.0))
        self._stats[arm] = (n + 1.0, total + reward)

    def _hyper(self) -> tuple[Any, ...]:
        return (self.epsilon, self.decay, self.seed)

    @classmethod
    def _from_hyper(cls, values: tuple[Any, ...]) -> Self:
        epsilon, decay, seed = values
        return cls(epsilon=epsilon, decay=decay, seed=seed)

    @classmethod
    def _example(cls, seed: int) -> Self:
        return cls(epsilon=0.3, seed=seed)


# -- the contract suite's stream, shared with linucb.py ---------------------------------------

CONTRACT_ARMS = ("i0", "i1", "i2", "i3")


def _contract_stream() -> list[Event]:
    """Impressions whose ``value`` is the reward (1.0 = clicked), over two segments and users."""
    events = []
    for i in range(40):
        item = CONTRACT_ARMS[(i * 7) % len(CONTRACT_ARMS)]
        events.append(
            Event(
                event_id=f"c{i}",
                type=EventType.IMPRESSION,
                user_id=f"u{i % 3}",
                item_id=item,
                event_time_ms=1_700_000_000_000 + i,
                value=1.0 if (i % 5 == 0 or item == "i2") else 0.0,
                context={"segment": "men" if i % 2 else "women", "device": f"d{i % 3}"},
            )
        )
    return events


def _observe(learner: Learner, event: Event) -> tuple[str, float, tuple[float, ...]]:
    """Pull for the event's context, learn the logged arm's reward; output the decision."""
    if not isinstance(learner, Bandit) or event.item_id is None:
        raise TypeError("the bandit contract observes impressions with bandits")
    decision = learner.pull(CONTRACT_ARMS, event.context)
    probabilities = learner.arm_probabilities(CONTRACT_ARMS, event.context)
    learner.update(event.item_id, event.value or 0.0, event.context)
    return decision.arm, decision.propensity, tuple(probabilities[arm] for arm in CONTRACT_ARMS)
