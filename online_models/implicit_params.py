"""Implicit-feedback matrix factorisation, per owner: the hyperparameters and the arithmetic.

Two losses over the same parameters (an item bias and factors per item, factors per user;
a user bias cannot change a user's ranking, so it stays 0):

* ``bpr`` -- Bayesian personalised ranking (Rendle et al., 2009): each positive event
  ``(u, i)`` is paired with ``n_negatives`` items drawn uniformly from the known items and one
  SGD step raises ``ln sigmoid(x_ui - x_uj)`` for each; :func:`bpr_step`.
* ``wmf`` -- weighted MF on impressions (Hu et al., 2008, streamed): a positive event is a
  target 1 with its event weight, an impression a target 0 with the impression weight;
  one SGD step on the weighted squared error; :func:`wmf_step`.

Like :mod:`online_models.mf_params`, every step takes the owners' parts (:class:`UserParams`,
:class:`ItemParams`) and returns new parts, inputs untouched, so a Flink job can keep users
and items on different operators. Negatives are drawn by :func:`negative_rows`, a pure
function of ``(seed, draw key, number of known items)``: whoever holds the item rows (the job's
replica, or :class:`online_models.implicit.ImplicitMF`) draws the same negatives; the draw
key is :func:`draw_key` of the event's id.

>>> cfg = ImplicitConfig(n_factors=2, seed=1)
>>> user, pos = UserParams(0.0, np.array([0.1, 0.1])), ItemParams(0.0, np.array([0.1, 0.0]))
>>> neg = ItemParams(0.0, np.array([0.0, 0.1]))
>>> user2, pos2, (neg2,) = bpr_step(user, pos, [neg], 1.0, cfg)
>>> bool(score(user2, pos2) - score(user2, neg2) > score(user, pos) - score(user, neg))
True
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from config import Settings
from online_models.mf_params import ItemParams, MFConfig, UserParams, Vector, initial_factors
from schemas.events import Event, EventType

__all__ = [
    "LOSSES",
    "SWEPT_WMF",
    "EventWeights",
    "ImplicitConfig",
    "bpr_rows",
    "bpr_step",
    "draw_key",
    "implicit_config",
    "initial_implicit_item",
    "initial_implicit_user",
    "item_shape",
    "last_draws",
    "negative_rows",
    "score",
    "wmf_step",
]

LOSSES = ("bpr", "wmf")
Matrix = Vector  # float64 rows (one item each)
_CONFIG = struct.Struct("<BHdddHdq7d")
_MASK = (1 << 64) - 1


@dataclass(frozen=True)
class EventWeights:
    """How much one event of each type counts as a positive (0: not learned from).

    ``impression`` is the weight of an impression as a negative (``wmf`` only); a rating is a
    positive when its value is at least ``rating_from``.

    >>> w = EventWeights()
    >>> w.positive(Event("e", EventType.PURCHASE, "u", 0, item_id="i")), w.positive(
    ...     Event("e", EventType.RATING, "u", 0, item_id="i", value=2.0))
    (3.0, 0.0)
    """

    view: float = 1.0
    click: float = 1.0
    add_to_cart: float = 2.0
    purchase: float = 3.0
    rating: float = 1.0
    rating_from: float = 4.0
    impression: float = 0.03

    def positive(self, event: Event) -> float:
        """The event's weight as a positive (0.0 for impressions, erasures and low ratings)."""
        kind = event.type
        if kind is EventType.RATING:
            return self.rating if (event.value or 0.0) >= self.rating_from else 0.0
        if kind in (EventType.IMPRESSION, EventType.ERASE):
            return 0.0
        return float(getattr(self, kind.value, 0.0))


@dataclass(frozen=True)
class ImplicitConfig:
    """Hyperparameters of the implicit learner (defaults: see docs/adr/0008-implicit-learner.md).

    >>> ImplicitConfig().loss
    'bpr'
    """

    loss: str = "bpr"
    n_factors: int = 16
    lr: float = 0.1
    bias_lr: float = 0.05
    l2: float = 0.001
    n_negatives: int = 8
    init_sigma: float = 0.1
    seed: int = 0
    weights: EventWeights = field(default_factory=EventWeights)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    def pack(self) -> bytes:
        """Fixed-size bytes of every hyperparameter."""
        w = self.weights
        return _CONFIG.pack(
            LOSSES.index(self.loss), self.n_factors, self.lr, self.bias_lr, self.l2, self.n_negatives,
            self.init_sigma, self.seed, w.view, w.click, w.add_to_cart, w.purchase, w.rating, w.rating_from,
            w.impression,
        )  # fmt: skip

    @classmethod
    def unpack_from(cls, data: bytes, offset: int) -> tuple[ImplicitConfig, int]:
        """Read :meth:`pack` output at ``offset``; return it and the offset after it."""
        loss, k, lr, blr, l2, n_neg, sigma, seed, *weights = _CONFIG.unpack_from(data, offset)
        return cls(LOSSES[loss], k, lr, blr, l2, n_neg, sigma, seed, EventWeights(*weights)), offset + _CONFIG.size


#: ``wmf`` at the best of its own sweep (docs/adr/0008-implicit-learner.md); the settings' defaults are BPR's.
SWEPT_WMF = ImplicitConfig("wmf", n_factors=8, lr=0.2, bias_lr=0.01, l2=0.05, init_sigma=0.01,
                           weights=EventWeights(impression=0.03))  # fmt: skip


def implicit_config(settings: Settings, loss: str | None = None) -> ImplicitConfig:
    """The implicit learner the settings describe (the job and ``pulse eval`` build it here).

    >>> implicit_config(Settings(mf_learner="wmf")).loss, implicit_config(Settings(), loss="bpr").loss
    ('wmf', 'bpr')
    """
    s = settings
    chosen = loss or (s.mf_learner if s.mf_learner in LOSSES else "bpr")
    weights = EventWeights(s.weight_view, s.weight_click, s.weight_add_to_cart, s.weight_purchase,
                           impression=s.weight_impression)  # fmt: skip
    return ImplicitConfig(chosen, s.implicit_factors, s.implicit_lr, s.implicit_bias_lr, s.implicit_l2,
                          s.implicit_negatives, seed=s.mf_seed, weights=weights)  # fmt: skip


def item_shape(cfg: ImplicitConfig) -> MFConfig:
    """An :class:`MFConfig` whose initial users and items are this learner's, for code written for MF parts.

    The job's item replica, item owner and user record keep the implicit learner's parameters in
    MF's shapes (a user bias that stays 0, an item bias and factors); they draw initial parameters
    through it.

    >>> from online_models.mf_params import initial_item
    >>> cfg = ImplicitConfig(n_factors=3, seed=2)
    >>> bool((initial_item(item_shape(cfg), "i").factors == initial_implicit_item(cfg, "i").factors).all())
    True
    """
    return MFConfig(n_factors=cfg.n_factors, init_mu=0.0, init_sigma=cfg.init_sigma, seed=cfg.seed)


def initial_implicit_user(cfg: ImplicitConfig, user: str) -> UserParams:
    """A user never learned from: seeded factors (as MF draws them), zero bias."""
    return UserParams(0.0, initial_factors(cfg.seed, "user", user, cfg.n_factors, 0.0, cfg.init_sigma))


def initial_implicit_item(cfg: ImplicitConfig, item: str) -> ItemParams:
    """An item never learned from: seeded factors, zero bias."""
    return ItemParams(0.0, initial_factors(cfg.seed, "item", item, cfg.n_factors, 0.0, cfg.init_sigma))


def score(user: UserParams, item: ItemParams) -> float:
    """The ranking score: item bias + <user factors, item factors>."""
    return float(item.bias + np.dot(user.factors, item.factors))


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def draw_key(event_id: str) -> int:
    """The key of an event's negative draws: a stable 64-bit hash of its id.

    The job and ``pulse eval`` so draw the same rows for the same event, whatever the order or parallelism.

    >>> draw_key("e1") == draw_key("e1") != draw_key("e2")
    True
    """
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


def negative_rows(seed: int, draw_key: int, n_known: int, n: int, skip: int = -1) -> list[int]:
    """``n`` rows drawn uniformly from ``range(n_known)`` (never ``skip``), a pure function of its arguments.

    >>> negative_rows(0, 5, 10, 3) == negative_rows(0, 5, 10, 3), negative_rows(0, 5, 1, 3, skip=0)
    (True, [])
    """
    if n_known <= 1 and skip >= 0:
        return []
    rows: list[int] = []
    state = _splitmix((seed << 32) ^ draw_key)
    while len(rows) < n:
        state = _splitmix(state)
        row = state % n_known
        if row != skip:
            rows.append(row)
    return rows


def bpr_rows(
    user: UserParams, positive: ItemParams, neg_biases: Vector, neg_factors: Matrix, weight: float,
    cfg: ImplicitConfig,
) -> tuple[UserParams, ItemParams, Vector, Matrix]:
    """One SGD ascent step on ``weight * sum_j ln sigmoid(x_ui - x_uj)``, the negatives as arrays (one row each).

    New parts per owner: the user, the positive item, the negatives' new biases and factors (the
    inputs are not changed). A negative drawn twice is stepped twice from the same parameters;
    whoever stores the rows keeps the later one (:func:`last_draws`).
    """
    u, qi, lr, l2 = user.factors, positive.factors, cfg.lr, cfg.l2
    x_ui = positive.bias + float(u @ qi)
    # d ln sigmoid(x) / dx at x = x_ui - x_uj, i.e. sigmoid(x_uj - x_ui) (tanh form: no overflow)
    g = weight * 0.5 * (1.0 + np.tanh(0.5 * (neg_biases + neg_factors @ u - x_ui)))
    g_sum = float(g.sum())
    du = g_sum * qi - g @ neg_factors - l2 * u
    dqi = g_sum * u - l2 * qi
    new_factors = neg_factors - lr * (np.outer(g, u) + l2 * neg_factors)
    new_biases = neg_biases - cfg.bias_lr * (g + l2 * neg_biases)
    new_positive = ItemParams(positive.bias + cfg.bias_lr * (g_sum - l2 * positive.bias), qi + lr * dqi)
    return UserParams(0.0, u + lr * du), new_positive, new_biases, new_factors


def bpr_step(
    user: UserParams, positive: ItemParams, negatives: Sequence[ItemParams], weight: float, cfg: ImplicitConfig
) -> tuple[UserParams, ItemParams, list[ItemParams]]:
    """:func:`bpr_rows` with the negatives as parameter objects."""
    biases = np.array([neg.bias for neg in negatives])
    factors = np.array([neg.factors for neg in negatives]).reshape(len(negatives), len(user.factors))
    user, new_positive, new_biases, new_factors = bpr_rows(user, positive, biases, factors, weight, cfg)
    return user, new_positive, [ItemParams(float(b), f) for b, f in zip(new_biases, new_factors, strict=True)]


def last_draws(rows: Sequence[int]) -> dict[int, int]:
    """Each drawn row once, in order of first draw, with the index of its last draw (whose step is kept).

    >>> last_draws([4, 2, 4])
    {4: 2, 2: 1}
    """
    last: dict[int, int] = {}
    for index, row in enumerate(rows):
        last[row] = index
    return last


def wmf_step(
    user: UserParams, item: ItemParams, target: float, weight: float, cfg: ImplicitConfig
) -> tuple[UserParams, ItemParams]:
    """One SGD step on ``weight * (x_ui - target) ** 2 / 2``; new parts per owner."""
    u, q, lr, l2 = user.factors, item.factors, cfg.lr, cfg.l2
    error = weight * (item.bias + float(np.dot(u, q)) - target)
    new_user = UserParams(0.0, u - lr * (error * q + l2 * u))
    new_item = ItemParams(item.bias - cfg.bias_lr * (error + l2 * item.bias), q - lr * (error * u + l2 * q))
    return new_user, new_item
