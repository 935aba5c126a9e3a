"""Disjoint LinUCB (Li et al. 2010, algorithm 1) on hashed context features.

Per arm ``a`` the state is ``A_a = ridge * I + sum x x^T`` and ``b_a = sum r x``; the score
of an arm for a context ``x`` is ``theta_a . x + alpha * sqrt(x^T A_a^-1 x)`` with
``theta_a = A_a^-1 b_a``. Relation to River: ``theta_a . x`` and ``x^T A_a^-1 x`` are the
predictive mean and ``variance - 1/beta`` of ``river.linear_model.BayesianLinearRegression
(alpha=1, beta=1)`` fed the same dense vectors, the per-arm model of
``river.bandit.LinUCBDisjoint`` (checked in the tests). River's policy then adds the
predictive Gaussian's ``sigma``, which in River 0.23 is ``(1/beta + x^T S x) ** (1/4)``
(``predict_one`` passes a standard deviation where ``Var._from_state`` takes a variance);
we keep the paper's ``alpha * sqrt(x^T A^-1 x)`` instead, so arm choices differ from River's.

Features: a context maps names to strings (categorical) or numbers. Index 0 is a bias of
1; a string value ``v`` of ``k`` sets ``x[1 + h("k=v") % (d - 1)] = 1``, a number sets
``x[1 + h("k") % (d - 1)] = value``, with ``h`` the first 8 bytes of BLAKE2b. Hashing needs
no vocabulary in the state, so the state size is fixed by ``d``; collisions are possible
when there are many more categories than ``d``. Only the ``features`` keys are read
(all keys when ``None``).

Byte layout (little-endian): ``StateHeader`` | alpha f64, ridge f64, d u16, seed u64 |
feature count u16 (0xFFFF = all) and feature names | pulls u64 | updates u64 | arm count u32 |
per arm: id, then the upper triangle of ``A`` (row-major) and ``b`` as float64.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Any, Self

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
from online_models.bandits.mab import _contract_stream, _observe
from online_models.base import ArmId, ContractCase, StateHeader

__all__ = ["LinUCB", "featurize"]

Vector = np.ndarray[Any, np.dtype[np.float64]]

_HYPER = struct.Struct("<ddHQ")
_U16 = struct.Struct("<H")
_ALL_FEATURES = 0xFFFF


def _first_pull_rng(seed: int) -> np.random.Generator:
    """The generator of a bandit with ``seed``'s first pull (``Bandit._rng(0, 0)``)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, 0)))


@functools.lru_cache(maxsize=65536)
def _bucket(token: str, n_buckets: int) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little") % n_buckets


def featurize(context: Context | None, n_features: int, keys: Sequence[str] | None = None) -> Vector:
    """The hashed feature vector of ``context`` (see the module docstring).

    >>> featurize({"segment": "men", "age": 0.5}, 4).tolist()
    [1.0, 1.0, 0.0, 0.5]
    >>> featurize(None, 3).tolist()
    [1.0, 0.0, 0.0]
    """
    x = np.zeros(n_features)
    x[0] = 1.0
    if context is None:
        return x
    for key in context if keys is None else keys:
        if key not in context:
            continue
        value = context[key]
        if isinstance(value, str):
            x[1 + _bucket(f"{key}={value}", n_features - 1)] += 1.0
        else:
            x[1 + _bucket(key, n_features - 1)] += float(value)
    return x


class LinUCB(Bandit):
    """Disjoint LinUCB; deterministic up to ties (propensity ``1/n_tied``).

    >>> bandit = LinUCB(alpha=0.5, n_features=8, seed=1)
    >>> men, women = {"segment": "men"}, {"segment": "women"}
    >>> for _ in range(30):
    ...     bandit.update("shirt", 1.0, men); bandit.update("dress", 0.0, men)
    ...     bandit.update("shirt", 0.0, women); bandit.update("dress", 1.0, women)
    >>> bandit.pull(["shirt", "dress"], men)
    BanditDecision(arm='shirt', propensity=1.0)
    >>> bandit.pull(["shirt", "dress"], women).arm
    'dress'
    >>> LinUCB(n_features=8).arm_probabilities(["shirt", "dress"], men)
    {'shirt': 0.5, 'dress': 0.5}
    """

    def __init__(
        self,
        alpha: float = 1.0,
        ridge: float = 1.0,
        n_features: int = 32,
        features: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        if alpha < 0 or ridge <= 0:
            raise ValueError("alpha is non-negative and ridge positive")
        if not 2 <= n_features < 2**16:
            raise ValueError("n_features is in [2, 65536)")
        if features is not None and len(features) >= _ALL_FEATURES:
            raise ValueError("too many feature names")
        self.alpha = alpha
        self.ridge = ridge
        self.n_features = n_features
        self.features = None if features is None else tuple(features)
        self._a: dict[ArmId, Vector] = {}
        self._b: dict[ArmId, Vector] = {}
        # Derived from _a/_b, never serialised: (A^-1, theta) per arm.
        self._solved: dict[ArmId, tuple[Vector, Vector]] = {}
        # Derived too: per candidate-arm tuple, the stacked A^-1 and theta rows that ``scores`` multiplies.
        self._stacks: dict[tuple[ArmId, ...], Vector] = {}
        self._prior_inverse = np.eye(n_features) / ridge
        self._zero = np.zeros(n_features)

    def featurize(self, context: Context | None) -> Vector:
        """The feature vector of ``context`` for this bandit."""
        return featurize(context, self.n_features, self.features)

    def estimates(self, arms: Sequence[ArmId], context: Context | None) -> dict[ArmId, tuple[float, float]]:
        """Per arm ``(theta . x, x^T A^-1 x)``: predicted reward and its squared width."""
        x = self.featurize(context)
        out = {}
        for arm in arms:
            inverse, theta = self._solve(arm)
            out[arm] = (float(theta @ x), float(x @ inverse @ x))
        return out

    def upper_bounds(self, arms: Sequence[ArmId], context: Context | None) -> dict[ArmId, float]:
        """``theta . x + alpha * sqrt(x^T A^-1 x)`` per arm."""
        arms = tuple(arms)
        return dict(zip(arms, self.scores(arms, self.featurize(context)).tolist(), strict=True))

    def scores(self, arms: tuple[ArmId, ...], x: Vector) -> Vector:
        """The upper bounds of ``arms`` for the feature vector ``x``, in one batch.

        ``pull``, ``arm_probabilities``, :meth:`decide` and serving all score with this same
        arithmetic, so a decision made from a restored state is bit for bit the learner's.
        """
        stacked = self._stacked(arms)  # (K * (d + 1), d): per arm the rows of A^-1, then theta
        products = (stacked @ x).reshape(len(arms), self.n_features + 1)
        widths = products[:, :-1] @ x
        result: Vector = products[:, -1] + self.alpha * np.sqrt(np.maximum(widths, 0.0))
        return result

    def arm_probabilities(self, arms: Sequence[ArmId], context: Context | None = None) -> dict[ArmId, float]:
        """Uniform over the arms with the largest upper bound, 0 elsewhere."""
        best = set(tied_argmax(self.upper_bounds(arms, context)))
        return {arm: 1.0 / len(best) if arm in best else 0.0 for arm in arms}

    def decide(self, arms: Sequence[ArmId], context: Context | None, seed: int) -> BanditDecision:
        """What this state pulls for a request seeded ``seed``, without changing the bandit.

        The pull of a copy with ``seed`` and no pull yet (the generator of
        ``SeedSequence(seed, spawn_key=(0, 0))``, built only to split a tie): serving's choice
        for a request and ``pulse eval bandit --decide``'s.

        >>> bandit = LinUCB(n_features=4)
        >>> sorted({bandit.decide(["a", "b"], None, seed).arm for seed in range(8)})
        ['a', 'b']
        >>> bandit.decide(["a", "b"], None, 1) == bandit.decide(["a", "b"], None, 1)
        True
        """
        arms = tuple(arms)
        index, propensity = self.choose_index(arms, self.featurize(context), lambda: _first_pull_rng(seed))
        return BanditDecision(arm=arms[index], propensity=propensity)

    def choose_index(
        self, arms: tuple[ArmId, ...], x: Vector, rng: Callable[[], np.random.Generator]
    ) -> tuple[int, float]:
        """Index of the arm with the largest upper bound for ``x`` and its propensity ``1/n_tied``.

        A tie (arms in the order given) is split by one draw of ``rng()``, called only then.
        """
        scores = self.scores(arms, x)
        top = int(scores.argmax())  # the first of the tied, if any
        if np.count_nonzero(scores == scores[top]) == 1:
            return top, 1.0
        best = np.flatnonzero(scores == scores[top])
        return int(best[int(rng().integers(len(best)))]), 1.0 / len(best)

    def known_arms(self) -> list[ArmId]:
        """The arms with an update, in the order they were first updated."""
        return list(self._a)

    def _choose(self, arms: Sequence[ArmId], context: Context | None, rng: np.random.Generator) -> BanditDecision:
        arms = tuple(arms)
        index, propensity = self.choose_index(arms, self.featurize(context), lambda: rng)
        return BanditDecision(arm=arms[index], propensity=propensity)

    def _learn(self, arm: ArmId, reward: float, context: Context | None) -> None:
        x = self.featurize(context)
        if arm not in self._a:
            self._a[arm] = np.eye(self.n_features) * self.ridge
            self._b[arm] = np.zeros(self.n_features)
        self._a[arm] += np.outer(x, x)
        self._b[arm] += reward * x
        self._solved.pop(arm, None)
        self._stacks.clear()

    def _stacked(self, arms: tuple[ArmId, ...]) -> Vector:
        stacked = self._stacks.get(arms)
        if stacked is None:
            rows = [np.vstack(self._solve(arm)) for arm in arms]
            stacked = np.ascontiguousarray(np.concatenate(rows))
            if len(self._stacks) >= 64:
                self._stacks.clear()
            self._stacks[arms] = stacked
        return stacked

    def _solve(self, arm: ArmId) -> tuple[Vector, Vector]:
        if arm not in self._a:
            return self._prior_inverse, self._zero
        if arm not in self._solved:
            inverse = np.linalg.inv(self._a[arm])
            self._solved[arm] = (inverse, inverse @ self._b[arm])
        return self._solved[arm]

    # -- bytes -----------------------------------------------------------------------------

    _HEADER = StateHeader(b"BLUC")

    def to_bytes(self) -> bytes:
        """Hyperparameters, counters and per-arm ``A`` (upper triangle) and ``b``."""
        parts = [
            self._HEADER.pack(self.STATE_VERSION),
            _HYPER.pack(self.alpha, self.ridge, self.n_features, self.seed),
        ]
        if self.features is None:
            parts.append(_U16.pack(_ALL_FEATURES))
        else:
            parts.append(_U16.pack(len(self.features)))
            parts.extend(pack_arm(name) for name in self.features)
        parts.append(self._pack_counters())
        parts.append(pack_count(len(self._a)))
        upper = np.triu_indices(self.n_features)
        for arm, a in self._a.items():
            parts.append(pack_arm(arm))
            parts.append(np.ascontiguousarray(a[upper], dtype="<f8").tobytes())
            parts.append(np.ascontiguousarray(self._b[arm], dtype="<f8").tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild from :meth:`to_bytes` output."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        alpha, ridge, d, seed = _HYPER.unpack_from(data, offset)
        offset += _HYPER.size
        (n_names,) = _U16.unpack_from(data, offset)
        offset += _U16.size
        features: list[str] | None = None
        if n_names != _ALL_FEATURES:
            features = []
            for _ in range(n_names):
                name, offset = unpack_arm(data, offset)
                features.append(name)
        learner = cls(alpha=alpha, ridge=ridge, n_features=d, features=features, seed=seed)
        offset = learner._unpack_counters(data, offset)
        n_arms, offset = unpack_count(data, offset)
        upper = np.triu_indices(d)
        n_upper = len(upper[0])
        for _ in range(n_arms):
            arm, offset = unpack_arm(data, offset)
            values = np.frombuffer(data, dtype="<f8", count=n_upper + d, offset=offset).astype(np.float64)
            offset += 8 * (n_upper + d)
            a = np.zeros((d, d))
            a[upper] = values[:n_upper]
            a.T[upper] = values[:n_upper]
            learner._a[arm] = a
            learner._b[arm] = values[n_upper:].copy()
        check_consumed(data, offset)
        return learner

    STAT_NAMES = ("updates", "reward_sum")

    def table_payload(self) -> dict[str, Any]:
        """The arm table the job writes to Redis: a summary per arm, for people, and the state, for serving.

        ``arms`` maps each arm to ``[updates, reward_sum]`` (``A[0,0] - ridge`` and ``b[0]``: the
        bias feature is 1 in every context), named by ``stat_names`` as the other policies' tables
        are; ``state`` is :meth:`to_bytes` in base64: the exact float64 ``A`` and ``b``, from which
        serving solves ``A^-1`` and ``theta`` once per table version (:meth:`from_table_payload`).

        >>> bandit = LinUCB(n_features=4, features=["segment"])
        >>> bandit.update("a", 1.0, {"segment": "men"})
        >>> payload = bandit.table_payload()
        >>> payload["arms"], payload["features"], payload["hyperparameters"]
        ({'a': [1.0, 1.0]}, ['segment'], {'alpha': 1.0, 'ridge': 1.0, 'n_features': 4})
        >>> LinUCB.from_table_payload(payload).to_bytes() == bandit.to_bytes()
        True
        """
        return {
            "stat_names": list(self.STAT_NAMES),
            "arms": {arm: [float(a[0, 0] - self.ridge), float(self._b[arm][0])] for arm, a in self._a.items()},
            "hyperparameters": {"alpha": self.alpha, "ridge": self.ridge, "n_features": self.n_features},
            "features": None if self.features is None else list(self.features),
            "state": base64.b64encode(self.to_bytes()).decode("ascii"),
        }

    @classmethod
    def from_table_payload(cls, payload: dict[str, Any]) -> Self:
        """The bandit whose :meth:`table_payload` ``payload`` is (``ValueError`` when it holds no state)."""
        state = payload.get("state")
        if not isinstance(state, str):
            raise ValueError("not a LinUCB arm table: no state")
        return cls.from_bytes(base64.b64decode(state, validate=True))

    def clone(self) -> Self:
        """Same hyperparameters, no learned state."""
        return type(self)(
            alpha=self.alpha, ridge=self.ridge, n_features=self.n_features, features=self.features, seed=self.seed
        )

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        return ContractCase(
            learner=cls(alpha=0.3, n_features=8, seed=seed), stream=_contract_stream(), observe=_observe
        )
