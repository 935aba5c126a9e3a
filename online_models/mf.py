"""Biased matrix factorisation with its state split by owner.

The arithmetic is River's ``reco.BiasedMF`` (0.23) step for step: the global mean is a
running mean updated *before* the prediction used for the gradient, the gradient of the
squared loss is clamped, both latent gradients are computed from the old vectors, then
plain SGD updates the user bias, item bias, user factors and item factors.

What differs is where state lives. A Flink job keeps :class:`UserParams` keyed by user,
:class:`ItemParams` keyed by item and one :class:`GlobalParams`; :func:`learn_step` takes
the three parts and returns the three updated parts, so each is written back to its owner.
New users and items get factors from :func:`initial_factors`, seeded by a stable hash of
``(seed, owner kind, key)``, so any worker draws the same vector for the same key.

>>> cfg = MFConfig(n_factors=4, seed=7)
>>> user, item = initial_user(cfg, "u1"), initial_item(cfg, "i1")
>>> user, item, glob = learn_step(user, item, GlobalParams(), 4.0, cfg)
>>> glob.n_learned, round(predict(user, item, glob), 4)
(1, 4.0002)
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Self

import numpy as np
from numpy.typing import NDArray

from online_models.base import ContractCase, ItemId, Learner, StateHeader, UserId
from schemas.events import Event, EventType

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

Vector = NDArray[np.float64]

_F64 = np.dtype("<f8")
_OWNER = struct.Struct("<dH")  # bias, n_factors
_GLOBAL = struct.Struct("<dq")  # mean, n_learned
_CONFIG = struct.Struct("<H7dq4d")
_COUNT = struct.Struct("<I")
_KEY_LEN = struct.Struct("<H")


@dataclass(frozen=True)
class EventTargets:
    """Maps an event to the target MF learns from, or ``None`` when it is not learned from.

    Ratings use their value; implicit events use a weight; impressions and erasures are
    not learned from.

    >>> from schemas.events import Event, EventType
    >>> t = EventTargets()
    >>> t.target(Event("e", EventType.PURCHASE, "u", 0, item_id="i"))
    4.0
    >>> t.target(Event("e", EventType.IMPRESSION, "u", 0, item_id="i")) is None
    True
    """

    view: float = 1.0
    click: float = 2.0
    add_to_cart: float = 3.0
    purchase: float = 4.0

    def target(self, event: Event) -> float | None:
        """The target for ``event``; raises on a rating without a value."""
        kind = event.type
        if kind is EventType.RATING:
            if event.value is None:
                raise ValueError(f"rating event {event.event_id} has no value")
            return float(event.value)
        if kind is EventType.VIEW:
            return self.view
        if kind is EventType.CLICK:
            return self.click
        if kind is EventType.ADD_TO_CART:
            return self.add_to_cart
        if kind is EventType.PURCHASE:
            return self.purchase
        return None


@dataclass(frozen=True)
class MFConfig:
    """Hyperparameters; defaults are River's ``BiasedMF`` defaults (SGD lr 0.01, sigma 0.1).

    >>> MFConfig().n_factors
    10
    """

    n_factors: int = 10
    bias_lr: float = 0.01
    latent_lr: float = 0.01
    l2_bias: float = 0.0
    l2_latent: float = 0.0
    init_mu: float = 0.0
    init_sigma: float = 0.1
    clip_gradient: float = 1e12
    seed: int = 0
    targets: EventTargets = field(default_factory=EventTargets)

    def pack(self) -> bytes:
        """Fixed-size bytes of every hyperparameter."""
        t = self.targets
        return _CONFIG.pack(
            self.n_factors, self.bias_lr, self.latent_lr, self.l2_bias, self.l2_latent,
            self.init_mu, self.init_sigma, self.clip_gradient, self.seed,
            t.view, t.click, t.add_to_cart, t.purchase,
        )  # fmt: skip

    @classmethod
    def unpack_from(cls, data: bytes, offset: int) -> tuple[MFConfig, int]:
        """Read :meth:`pack` output at ``offset``; return it and the offset after it."""
        (k, blr, llr, l2b, l2l, mu, sigma, clip, seed, *weights) = _CONFIG.unpack_from(data, offset)
        cfg = cls(k, blr, llr, l2b, l2l, mu, sigma, clip, seed, EventTargets(*weights))
        return cfg, offset + _CONFIG.size


def _pack_owner(header: StateHeader, bias: float, factors: Vector) -> bytes:
    return b"".join((header.pack(1), _OWNER.pack(bias, len(factors)), factors.astype(_F64).tobytes()))


def _unpack_owner(header: StateHeader, data: bytes) -> tuple[float, Vector]:
    _, offset = header.unpack(data, supported=(1,))
    bias, n = _OWNER.unpack_from(data, offset)
    offset += _OWNER.size
    if len(data) != offset + 8 * n:
        raise ValueError(f"{header.tag!r} state is {len(data)} bytes, expected {offset + 8 * n}")
    return bias, np.frombuffer(data, _F64, n, offset).astype(np.float64)


@dataclass(frozen=True, slots=True)
class UserParams:
    """What a user owns: bias and latent factors.

    >>> p = UserParams(0.5, np.zeros(16))
    >>> len(p.to_bytes()), UserParams.from_bytes(p.to_bytes()).bias
    (143, 0.5)
    """

    bias: float
    factors: Vector

    _HEADER = StateHeader(b"MFUS")

    def to_bytes(self) -> bytes:
        """Header, bias, factor count and raw little-endian float64 factors."""
        return _pack_owner(self._HEADER, self.bias, self.factors)

    @classmethod
    def from_bytes(cls, data: bytes) -> UserParams:
        """Inverse of :meth:`to_bytes`."""
        return cls(*_unpack_owner(cls._HEADER, data))


@dataclass(frozen=True, slots=True)
class ItemParams:
    """What an item owns: bias and latent factors.

    >>> p = ItemParams(-0.25, np.ones(3))
    >>> ItemParams.from_bytes(p.to_bytes()).factors.tolist()
    [1.0, 1.0, 1.0]
    """

    bias: float
    factors: Vector

    _HEADER = StateHeader(b"MFIT")

    def to_bytes(self) -> bytes:
        """Header, bias, factor count and raw little-endian float64 factors."""
        return _pack_owner(self._HEADER, self.bias, self.factors)

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemParams:
        """Inverse of :meth:`to_bytes`."""
        return cls(*_unpack_owner(cls._HEADER, data))


@dataclass(frozen=True, slots=True)
class GlobalParams:
    """The shared part: running mean of learned targets and how many events were learned.

    >>> g = GlobalParams(3.5, 10)
    >>> len(g.to_bytes()), GlobalParams.from_bytes(g.to_bytes())
    (21, GlobalParams(mean=3.5, n_learned=10))
    """

    mean: float = 0.0
    n_learned: int = 0

    _HEADER = StateHeader(b"MFGL")

    def to_bytes(self) -> bytes:
        """Header, mean and count."""
        return self._HEADER.pack(1) + _GLOBAL.pack(self.mean, self.n_learned)

    @classmethod
    def from_bytes(cls, data: bytes) -> GlobalParams:
        """Inverse of :meth:`to_bytes`."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        return cls(*_GLOBAL.unpack_from(data, offset))


def initial_factors(seed: int, owner: str, key: str, n_factors: int, mu: float, sigma: float) -> Vector:
    """Factors drawn from Normal(mu, sigma) by a generator seeded with blake2b(seed, owner, key).

    >>> a = initial_factors(1, "user", "u1", 3, 0.0, 0.1)
    >>> bool((a == initial_factors(1, "user", "u1", 3, 0.0, 0.1)).all())
    True
    >>> bool((a == initial_factors(1, "item", "u1", 3, 0.0, 0.1)).any())
    False
    """
    digest = hashlib.blake2b(f"{seed}\x1f{owner}\x1f{key}".encode(), digest_size=16).digest()
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))
    return rng.normal(mu, sigma, n_factors)


def initial_user(cfg: MFConfig, user: UserId) -> UserParams:
    """Parameters of a user never learned from (zero bias, seeded factors)."""
    return UserParams(0.0, initial_factors(cfg.seed, "user", user, cfg.n_factors, cfg.init_mu, cfg.init_sigma))


def initial_item(cfg: MFConfig, item: ItemId) -> ItemParams:
    """Parameters of an item never learned from (zero bias, seeded factors)."""
    return ItemParams(0.0, initial_factors(cfg.seed, "item", item, cfg.n_factors, cfg.init_mu, cfg.init_sigma))


def predict(user: UserParams, item: ItemParams, glob: GlobalParams) -> float:
    """Predicted target: global mean + user bias + item bias + <user factors, item factors>."""
    return float(glob.mean + user.bias + item.bias + np.dot(user.factors, item.factors))


def learn_step(
    user: UserParams, item: ItemParams, glob: GlobalParams, y: float, cfg: MFConfig
) -> tuple[UserParams, ItemParams, GlobalParams]:
    """One SGD step on ``(user, item, y)``; returns new parts per owner, inputs untouched."""
    n = glob.n_learned + 1
    mean = glob.mean + (1.0 / n) * (y - glob.mean)
    u_f, i_f = user.factors, item.factors
    y_pred = float(mean + user.bias + item.bias + np.dot(u_f, i_f))
    g = 2 * (y_pred - y)
    g = max(min(g, cfg.clip_gradient), -cfg.clip_gradient)
    u_bias = user.bias - cfg.bias_lr * (g + cfg.l2_bias * user.bias)
    i_bias = item.bias - cfg.bias_lr * (g + cfg.l2_bias * item.bias)
    l2, lr = cfg.l2_latent, cfg.latent_lr
    u_new = u_f - lr * (g * i_f + l2 * u_f)
    i_new = i_f - lr * (g * u_f + l2 * i_f)
    return UserParams(u_bias, u_new), ItemParams(i_bias, i_new), GlobalParams(mean, n)


def score_items(user: UserParams, item_biases: Vector, item_factors: Vector, glob: GlobalParams) -> Vector:
    """Predictions for many items at once: ``item_factors @ user.factors`` plus biases.

    >>> score_items(UserParams(1.0, np.ones(2)), np.zeros(3), np.eye(3, 2), GlobalParams(2.0, 1)).tolist()
    [4.0, 4.0, 3.0]
    """
    scores: Vector = item_factors @ user.factors
    scores += item_biases
    scores += glob.mean + user.bias
    return scores


def top_k_rows(scores: Vector, k: int, exclude_rows: Sequence[int] = ()) -> NDArray[np.intp]:
    """Rows of the ``k`` best scores, best first (ties: lower row first), skipping ``exclude_rows``.

    >>> top_k_rows(np.array([0.1, 0.9, 0.5, 0.7]), 2, exclude_rows=[1]).tolist()
    [3, 2]
    """
    if len(exclude_rows):
        scores = scores.copy()
        scores[np.asarray(exclude_rows, dtype=np.intp)] = -np.inf
        k = min(k, len(scores) - len(set(exclude_rows)))
    k = min(k, len(scores))
    if k <= 0:
        return np.empty(0, dtype=np.intp)
    rows = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    best_first: NDArray[np.intp] = rows[np.lexsort((rows, -scores[rows]))]
    return best_first


def _pack_key(key: str) -> bytes:
    raw = key.encode()
    return _KEY_LEN.pack(len(raw)) + raw


def _unpack_keys(data: bytes, offset: int) -> tuple[list[str], int]:
    (n,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    keys = []
    for _ in range(n):
        (size,) = _KEY_LEN.unpack_from(data, offset)
        offset += _KEY_LEN.size
        keys.append(data[offset : offset + size].decode())
        offset += size
    return keys, offset


def _unpack_matrix(data: bytes, offset: int, rows: int, cols: int) -> tuple[Vector, Vector, int]:
    biases = np.frombuffer(data, _F64, rows, offset).astype(np.float64)
    offset += 8 * rows
    factors = np.frombuffer(data, _F64, rows * cols, offset).astype(np.float64).reshape(rows, cols)
    return biases, factors, offset + 8 * rows * cols


class OwnerSplitMF(Learner):
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
        self._glob = GlobalParams()
        self._users: dict[UserId, UserParams] = {}
        self._item_rows: dict[ItemId, int] = {}
        self._item_biases: Vector = np.zeros(16)
        self._item_factors: Vector = np.zeros((16, n_factors))

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
        return self._glob

    def user_params(self, user: UserId) -> UserParams:
        """The user's parameters, or its initial ones if never learned from."""
        params = self._users.get(user)
        return initial_user(self.config, user) if params is None else params

    def item_params(self, item: ItemId) -> ItemParams:
        """The item's parameters (a copy), or its initial ones if never learned from."""
        row = self._item_rows.get(item)
        if row is None:
            return initial_item(self.config, item)
        return ItemParams(float(self._item_biases[row]), self._item_factors[row].copy())

    def _item_row(self, item: ItemId) -> int:
        row = self._item_rows.get(item)
        if row is not None:
            return row
        row = len(self._item_rows)
        if row == len(self._item_biases):
            grow = max(row, 16)
            self._item_biases = np.concatenate([self._item_biases, np.zeros(grow)])
            self._item_factors = np.concatenate([self._item_factors, np.zeros((grow, self.config.n_factors))])
        init = initial_item(self.config, item)
        self._item_biases[row] = init.bias
        self._item_factors[row] = init.factors
        self._item_rows[item] = row
        return row

    # -- learning and predicting -------------------------------------------------------------

    def learn_one(self, user: UserId, item: ItemId, y: float) -> None:
        """One SGD step on ``(user, item, y)``."""
        u = self._users.get(user)
        if u is None:
            u = initial_user(self.config, user)
        row = self._item_row(item)
        i = ItemParams(float(self._item_biases[row]), self._item_factors[row])
        u, i, self._glob = learn_step(u, i, self._glob, y, self.config)
        self._users[user] = u
        self._item_biases[row] = i.bias
        self._item_factors[row] = i.factors

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
            return predict(u, initial_item(self.config, item), self._glob)
        return float(self._glob.mean + u.bias + self._item_biases[row] + np.dot(u.factors, self._item_factors[row]))

    def score(self, user: UserId, items: Sequence[ItemId]) -> Vector:
        """Predictions for ``items`` in order, in one matrix-vector product."""
        rows = np.fromiter((self._item_rows.get(i, -1) for i in items), np.intp, len(items))
        biases, factors = self._item_biases[rows], self._item_factors[rows]
        for pos in np.flatnonzero(rows < 0):  # items never learned from: their initial params
            init = initial_item(self.config, items[pos])
            biases[pos], factors[pos] = init.bias, init.factors
        return score_items(self.user_params(user), biases, factors, self._glob)

    def top_k(self, user: UserId, k: int, exclude: Sequence[ItemId] = ()) -> list[tuple[ItemId, float]]:
        """The ``k`` known items with the best predictions for ``user``, skipping ``exclude``."""
        n = len(self._item_rows)
        scores = score_items(self.user_params(user), self._item_biases[:n], self._item_factors[:n], self._glob)
        skip = [self._item_rows[i] for i in exclude if i in self._item_rows]
        keys = list(self._item_rows)
        return [(keys[r], float(scores[r])) for r in top_k_rows(scores, k, skip)]

    # -- state -------------------------------------------------------------------------------

    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters."""
        return self.from_config(self.config)

    def to_bytes(self) -> bytes:
        """Header, hyperparameters, global part, then users and items as key lists + raw arrays."""
        users, n_items = list(self._users.values()), len(self._item_rows)
        k = self.config.n_factors
        user_factors = np.array([u.factors for u in users], dtype=_F64).reshape(len(users), k)
        return b"".join(
            (
                self._HEADER.pack(self.STATE_VERSION),
                self.config.pack(),
                _GLOBAL.pack(self._glob.mean, self._glob.n_learned),
                _COUNT.pack(len(users)),
                *map(_pack_key, self._users),
                np.array([u.bias for u in users], dtype=_F64).tobytes(),
                user_factors.tobytes(),
                _COUNT.pack(n_items),
                *map(_pack_key, self._item_rows),
                self._item_biases[:n_items].astype(_F64).tobytes(),
                self._item_factors[:n_items].astype(_F64).tobytes(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        cfg, offset = MFConfig.unpack_from(data, offset)
        learner = cls.from_config(cfg)
        mean, n_learned = _GLOBAL.unpack_from(data, offset)
        learner._glob = GlobalParams(mean, n_learned)
        user_keys, offset = _unpack_keys(data, offset + _GLOBAL.size)
        biases, factors, offset = _unpack_matrix(data, offset, len(user_keys), cfg.n_factors)
        learner._users = {key: UserParams(float(b), f) for key, b, f in zip(user_keys, biases, factors, strict=True)}
        item_keys, offset = _unpack_keys(data, offset)
        biases, factors, offset = _unpack_matrix(data, offset, len(item_keys), cfg.n_factors)
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} trailing bytes after OwnerSplitMF state")
        learner._item_rows = {key: row for row, key in enumerate(item_keys)}
        learner._item_biases, learner._item_factors = biases, factors
        return learner

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        from online_models._streams import mixed_events

        def observe(learner: Learner, event: Event) -> tuple[bool, float]:
            assert isinstance(learner, OwnerSplitMF)
            learned = learner.learn_event(event)
            return learned, learner.predict_one(event.user_id, event.item_id or "")

        return ContractCase(cls(n_factors=4, bias_lr=0.05, latent_lr=0.05, seed=seed), mixed_events(seed), observe)
