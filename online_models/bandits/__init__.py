"""Bandits with explicit, serialisable state: Thompson sampling, UCB, epsilon-greedy, LinUCB.

Every ``pull`` returns the arm and its propensity; see :mod:`online_models.bandits.base`
for the contract, randomness and scopes, :mod:`~online_models.bandits.mab` and
:mod:`~online_models.bandits.linucb` for each policy and its relation to ``river.bandit``.

>>> bandit = make_bandit("egreedy", seed=1, epsilon=0.5)
>>> bandit.pull(["a", "b", "c"]).propensity   # all tied before any update
0.3333333333333333
"""

from __future__ import annotations

from typing import Any

from online_models.bandits.base import Bandit, BanditDecision, BanditScope, Context, scope_key
from online_models.bandits.linucb import LinUCB, featurize
from online_models.bandits.mab import UCB, EpsilonGreedy, ThompsonSampling

__all__ = [
    "POLICIES",
    "UCB",
    "Bandit",
    "BanditDecision",
    "BanditScope",
    "Context",
    "EpsilonGreedy",
    "LinUCB",
    "ThompsonSampling",
    "bandit_state_sizes",
    "featurize",
    "make_bandit",
    "scope_key",
]

#: Short policy names (as on the command line) and their classes.
POLICIES: dict[str, type[Bandit]] = {
    "ts": ThompsonSampling,
    "ucb": UCB,
    "egreedy": EpsilonGreedy,
    "linucb": LinUCB,
}


def make_bandit(policy: str, seed: int = 0, **hyperparameters: Any) -> Bandit:
    """A fresh bandit by short name (``ts``, ``ucb``, ``egreedy``, ``linucb``)."""
    try:
        cls = POLICIES[policy]
    except KeyError:
        raise ValueError(f"unknown policy {policy!r}; one of {sorted(POLICIES)}") from None
    return cls(seed=seed, **hyperparameters)


def bandit_state_sizes(n_arms: int = 34, n_features: tuple[int, ...] = (8, 16, 32)) -> dict[str, int]:
    """Serialised bytes per bandit after every one of ``n_arms`` arms (ids ``"0"``..) was updated.

    >>> sizes = bandit_state_sizes(n_arms=2, n_features=(4,))
    >>> sizes["ts"], sizes["linucb d=4"]
    (91, 283)
    """
    arms = [str(i) for i in range(n_arms)]
    bandits: dict[str, Bandit] = {
        "ts": ThompsonSampling(),
        "ucb": UCB(),
        "egreedy": EpsilonGreedy(),
        **{f"linucb d={d}": LinUCB(n_features=d) for d in n_features},
    }
    sizes = {}
    for name, bandit in bandits.items():
        for arm in arms:
            bandit.update(arm, 1.0, {"segment": "men"})
        sizes[name] = len(bandit.to_bytes())
    return sizes
