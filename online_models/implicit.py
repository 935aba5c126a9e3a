"""Implicit-feedback MF (BPR or impression-weighted MF) held in one process, owner-split inside.

The arithmetic is :mod:`online_models.implicit_params`; this class keeps users in a dict of
:class:`UserParams` and items in one contiguous matrix (rows in order of first sight), so a
user is scored against every known item in one matrix-vector product, as the job's item
replica does. Items are known from any event about them, impressions included, so they can
be ranked (and drawn as negatives) before anyone clicked them.

>>> mf = ImplicitMF(n_factors=4, lr=0.1, seed=3)
>>> for k in range(300):
...     _ = mf.learn_event(Event(f"a{k}", EventType.CLICK, "alice", k, item_id=f"m{k % 2}"))
...     _ = mf.learn_event(Event(f"b{k}", EventType.CLICK, "bob", k, item_id=f"b{k % 2}"))
>>> sorted(item for item, _ in mf.top_k("alice", 2)), sorted(item for item, _ in mf.top_k("bob", 2))
(['m0', 'm1'], ['b0', 'b1'])
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Self

import numpy as np

from online_models.base import ContractCase, ItemId, Learner, StateHeader, UserId
from online_models.implicit_params import (
    EventWeights,
    ImplicitConfig,
    bpr_rows,
    draw_key,
    initial_implicit_item,
    initial_implicit_user,
    last_draws,
    negative_rows,
    wmf_step,
)
from online_models.item_rows import ItemRows
from online_models.mf_params import ItemParams, UserParams, Vector, top_k_rows
from schemas.events import Event, EventType

__all__ = ["ImplicitMF"]

_LEARNED = struct.Struct("<q")


class ImplicitMF(ItemRows, Learner):
    """Implicit-feedback MF; ``loss="bpr"`` (sampled negatives) or ``"wmf"`` (impressions as negatives)."""

    STATE_VERSION = 1
    _HEADER = StateHeader(b"IMPF")

    def __init__(
        self,
        loss: str = "bpr",
        n_factors: int = 16,
        lr: float = 0.1,
        bias_lr: float = 0.05,
        l2: float = 0.001,
        n_negatives: int = 8,
        init_sigma: float = 0.1,
        seed: int = 0,
        weights: EventWeights | None = None,
    ) -> None:
        self.config = ImplicitConfig(
            loss, n_factors, lr, bias_lr, l2, n_negatives, init_sigma, seed, weights or EventWeights()
        )
        self._n_learned = 0
        self._users: dict[UserId, UserParams] = {}
        self._init_items(n_factors)

    @classmethod
    def from_config(cls, cfg: ImplicitConfig) -> Self:
        """A fresh learner with the hyperparameters of ``cfg``."""
        return cls(cfg.loss, cfg.n_factors, cfg.lr, cfg.bias_lr, cfg.l2, cfg.n_negatives, cfg.init_sigma,
                   cfg.seed, cfg.weights)  # fmt: skip

    # -- owner views -------------------------------------------------------------------------

    def user_params(self, user: UserId) -> UserParams:
        """The user's parameters, or its initial ones if never learned from."""
        params = self._users.get(user)
        return initial_implicit_user(self.config, user) if params is None else params

    def _initial_item(self, item: ItemId) -> ItemParams:
        return initial_implicit_item(self.config, item)

    # -- learning and scoring ----------------------------------------------------------------

    def learn_event(self, event: Event) -> bool:
        """Learn from ``event`` if it is a positive (or, for ``wmf``, an impression); return whether it did.

        Any event about an item makes the item known; an erase event forgets the user.
        """
        if event.type is EventType.ERASE:
            self._users.pop(event.user_id, None)
            return False
        if event.item_id is None:
            return False
        row = self._item_row(event.item_id)
        weights = self.config.weights
        if event.type is EventType.IMPRESSION:
            if self.config.loss != "wmf" or weights.impression <= 0:
                return False
            self._learn_wmf(event.user_id, row, 0.0, weights.impression)
            return True
        weight = weights.positive(event)
        if weight <= 0:
            return False
        if self.config.loss == "wmf":
            self._learn_wmf(event.user_id, row, 1.0, weight)
        else:
            self._learn_bpr(event.user_id, row, weight, draw_key(event.event_id))
        return True

    def _learn_wmf(self, user: UserId, row: int, target: float, weight: float) -> None:
        u, item = wmf_step(self.user_params(user), self._params(row), target, weight, self.config)
        self._users[user] = u
        self._store(row, item)
        self._n_learned += 1

    def _learn_bpr(self, user: UserId, row: int, weight: float, key: int) -> None:
        cfg = self.config
        rows = negative_rows(cfg.seed, key, len(self._item_keys), cfg.n_negatives, skip=row)
        u, item, biases, factors = bpr_rows(self.user_params(user), self._params(row), self._item_biases[rows],
                                            self._item_factors[rows], weight, cfg)  # fmt: skip
        self._users[user] = u
        self._store(row, item)
        for r, index in last_draws(rows).items():
            self._store(r, ItemParams(float(biases[index]), factors[index]))
        self._n_learned += 1

    def scores_all(self, user: UserId) -> Vector:
        """Scores of ``user`` for every known item, in row order (one matrix-vector product)."""
        n = len(self._item_keys)
        scores: Vector = self._item_factors[:n] @ self.user_params(user).factors
        scores += self._item_biases[:n]
        return scores

    def score_one(self, user: UserId, item: ItemId) -> float:
        """Score of ``user`` for ``item`` (state is not changed)."""
        u, i = self.user_params(user), self.item_params(item)
        return float(i.bias + np.dot(u.factors, i.factors))

    def top_k(self, user: UserId, k: int, exclude: Sequence[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The ``k`` known items with the best scores for ``user``, skipping ``exclude``."""
        scores = self.scores_all(user)
        skip = [self._item_rows[i] for i in exclude if i in self._item_rows]
        return [(self._item_keys[r], float(scores[r])) for r in top_k_rows(scores, k, skip)]

    # -- state -------------------------------------------------------------------------------

    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters."""
        return self.from_config(self.config)

    def to_bytes(self) -> bytes:
        """Header, hyperparameters, learned count, then users and items as key lists + raw arrays."""
        return b"".join((
            self._HEADER.pack(self.STATE_VERSION),
            self.config.pack(),
            _LEARNED.pack(self._n_learned),
            self._pack_parameters(self._users),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        cfg, offset = ImplicitConfig.unpack_from(data, offset)
        learner = cls.from_config(cfg)
        (learner._n_learned,) = _LEARNED.unpack_from(data, offset)
        learner._users = learner._unpack_parameters(data, offset + _LEARNED.size, cfg.n_factors)
        return learner

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        from online_models._streams import mixed_events

        def observe(learner: Learner, event: Event) -> tuple[bool, float]:
            assert isinstance(learner, ImplicitMF)
            learned = learner.learn_event(event)
            return learned, learner.score_one(event.user_id, event.item_id or "")

        learner = cls(n_factors=4, lr=0.05, bias_lr=0.01, l2=0.01, n_negatives=4, seed=seed)
        return ContractCase(learner, mixed_events(seed), observe)
