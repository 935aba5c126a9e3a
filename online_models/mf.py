"""Biased matrix factorisation with its state split by owner: the in-memory learner.

The parameters each owner keeps (:class:`UserParams`, :class:`ItemParams`,
:class:`GlobalParams`) and the arithmetic on them (:func:`learn_step`, :func:`predict`,
:func:`score_items`, :func:`top_k_rows`) are in :mod:`online_models.mf_params`, River's
``reco.BiasedMF`` (0.23) step for step; a Flink job moves those parts between owners.
:class:`OwnerSplitMF` is the same model held in one process, and what the contract suite runs.
Every name of ``mf_params`` that callers use is importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from online_models.base import ContractCase, ItemId, Learner, StateHeader, UserId
from online_models.item_rows import ItemRows
from online_models.mf_params import (
    EventTargets,
    GlobalParams,
    ItemParams,
    MFConfig,
    UserParams,
    Vector,
    initial_factors,
    initial_item,
    initial_user,
    learn_step,
    predict,
    score_items,
    top_k_rows,
)
from schemas.events import Event, EventType

# The parameter names are re-exported: flink_jobs/, bench/, pulse/ and tests import them from here.
__all__ = [
    "EventTargets",
    "GlobalParams",
    "ItemParams",
    "MFConfig",
    "OwnerSplitMF",
    "UserParams",
    "initial_factors",
    "initial_item",
    "initial_user",
    "learn_step",
    "predict",
    "score_items",
    "top_k_rows",
]



class OwnerSplitMF(ItemRows, Learner):
    """In-memory biased MF built from the per-owner functions of this module.

    Users live in a dict of :class:`UserParams`; items in one contiguous matrix so that
    :meth:`score` and :meth:`top_k` are a single matrix-vector product.

    >>> mf = OwnerSplitMF(n_factors=4, bias_lr=0.05, latent_lr=0.05, seed=3)
    >>> for _ in range(20):
    ...     mf.learn_one("alice", "matrix", 5.0)
    ...     mf.learn_one("alice", "notebook", 1.0)
    >>> [item for item, _ in mf.top_k("alice", 2)]
    ['matrix', 'notebook']
    >>> mf.top_k("alice", 2, exclude=["matrix"])[0][0]
    'notebook'
    """

    STATE_VERSION = 1
    _HEADER = StateHeader(b"OSMF")

    def __init__(
        self,
        n_factors: int = 10,
        bias_lr: float = 0.01,
        latent_lr: float = 0.01,
        l2_bias: float = 0.0,
        l2_latent: float = 0.0,
        init_mu: float = 0.0,
        init_sigma: float = 0.1,
        clip_gradient: float = 1e12,
        seed: int = 0,
        targets: EventTargets | None = None,
    ) -> None:
        self.config = MFConfig(
            n_factors, bias_lr, latent_lr, l2_bias, l2_latent, init_mu, init_sigma, clip_gradient, seed,
            targets or EventTargets(),
        )  # fmt: skip
        self._global_params = GlobalParams()
        self._users: dict[UserId, UserParams] = {}
        self._init_items(n_factors)

    @classmethod
    def from_config(cls, cfg: MFConfig) -> Self:
        """A fresh learner with the hyperparameters of ``cfg``."""
        return cls(
            cfg.n_factors, cfg.bias_lr, cfg.latent_lr, cfg.l2_bias, cfg.l2_latent,
            cfg.init_mu, cfg.init_sigma, cfg.clip_gradient, cfg.seed, cfg.targets,
        )  # fmt: skip

    # -- owner views -------------------------------------------------------------------------

    @property
    def global_params(self) -> GlobalParams:
        """The shared part of the state."""
        return self._global_params

    def user_params(self, user: UserId) -> UserParams:
        """The user's parameters, or its initial ones if never learned from."""
        params = self._users.get(user)
        return initial_user(self.config, user) if params is None else params

    def scores_all(self, user: UserId) -> Vector:
        """Predictions of ``user`` for every item learned from, in row order."""
        n = len(self._item_keys)
        return score_items(self.user_params(user), self._item_biases[:n], self._item_factors[:n], self._global_params)

    def _initial_item(self, item: ItemId) -> ItemParams:
        return initial_item(self.config, item)

    # -- learning and predicting -------------------------------------------------------------

    def learn_one(self, user: UserId, item: ItemId, y: float) -> None:
        """One SGD step on ``(user, item, y)``."""
        u = self._users.get(user)
        if u is None:
            u = initial_user(self.config, user)
        row = self._item_row(item)
        u, i, self._global_params = learn_step(u, self._params(row), self._global_params, y, self.config)
        self._users[user] = u
        self._store(row, i)

    def learn_event(self, event: Event) -> bool:
        """Learn from ``event`` if it maps to a target; return whether it did.

        An erase event forgets the user's parameters (its past targets stay in the mean).
        """
        if event.type is EventType.ERASE:
            self._users.pop(event.user_id, None)
            return False
        y = self.config.targets.target(event)
        if y is None or event.item_id is None:
            return False
        self.learn_one(event.user_id, event.item_id, y)
        return True

    def predict_one(self, user: UserId, item: ItemId) -> float:
        """Predicted target of ``user`` for ``item`` (state is not changed)."""
        u = self._users.get(user)
        if u is None:
            u = initial_user(self.config, user)
        row = self._item_rows.get(item)
        if row is None:
            return predict(u, initial_item(self.config, item), self._global_params)
        mean = self._global_params.mean
        return float(mean + u.bias + self._item_biases[row] + np.dot(u.factors, self._item_factors[row]))

    def score(self, user: UserId, items: Sequence[ItemId]) -> Vector:
        """Predictions for ``items`` in order, in one matrix-vector product."""
        rows = np.fromiter((self._item_rows.get(i, -1) for i in items), np.intp, len(items))
        biases, factors = self._item_biases[rows], self._item_factors[rows]
        for pos in np.flatnonzero(rows < 0):  # items never learned from: their initial params
            init = initial_item(self.config, items[pos])
            biases[pos], factors[pos] = init.bias, init.factors
        return score_items(self.user_params(user), biases, factors, self._global_params)

    def top_k(self, user: UserId, k: int, exclude: Sequence[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The ``k`` known items with the best predictions for ``user``, skipping ``exclude``."""
        n = len(self._item_rows)
        scores = score_items(self.user_params(user), self._item_biases[:n], self._item_factors[:n], self._global_params)
        skip = [self._item_rows[i] for i in exclude if i in self._item_rows]
        keys = list(self._item_rows)
        return [(keys[r], float(scores[r])) for r in top_k_rows(scores, k, skip)]

    # -- state -------------------------------------------------------------------------------

    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters."""
        return self.from_config(self.config)

    def to_bytes(self) -> bytes:
        """Header, hyperparameters, global part, then users and items as key lists + raw arrays."""
        return b"".join((
            self._HEADER.pack(self.STATE_VERSION),
            self.config.pack(),
            self._global_params.pack(),
            self._pack_parameters(self._users),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        cfg, offset = MFConfig.unpack_from(data, offset)
        learner = cls.from_config(cfg)
        learner._global_params, offset = GlobalParams.unpack_from(data, offset)
        learner._users = learner._unpack_parameters(data, offset, cfg.n_factors)
        return learner

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        from online_models._streams import mixed_events

        def observe(learner: Learner, event: Event) -> tuple[bool, float]:
            assert isinstance(learner, OwnerSplitMF)
            learned = learner.learn_event(event)
            return learned, learner.predict_one(event.user_id, event.item_id or "")

        return ContractCase(cls(n_factors=4, bias_lr=0.05, latent_lr=0.05, seed=seed), mixed_events(seed), observe)
