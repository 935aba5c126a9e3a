"""The better explicit learner, per owner: Kalman-filtered biases, MF on the rest, a learned blend.

One rating ``y`` of user ``u`` for item ``i`` is predicted in three layers:

1. **Baseline** ``mean + b_u + s_u * b_i + c_u * pop_i``: the item's bias ``b_i``, the user's bias
   ``b_u``, how strongly the user follows item quality ``s_u`` (prior 1) and how the user feels
   about popular items ``c_u`` (``pop_i = ln(1 + ratings of i) - pop_center``). The user's three
   weights and the item's bias are Kalman filters: each owner keeps its means and covariance,
   a rating moves each by a gain that is large while its owner is uncertain (a new user meeting a
   well-known item moves the user, not the item) and shrinks as ratings accrue, down to a floor
   set by the drift variances (time-aware: old ratings are forgotten). The observation noise is
   the geometric mean of the user's and the item's shrunk mean squared errors.
2. **MF** ``<p_u, q_i>`` learned by plain SGD on what the baseline leaves (River's step).
3. **Blend** ``w0 + w1 * core + w2 * fast_u + w3 * slow_u``, ``core`` the sum of 1 and 2 and
   ``fast_u``/``slow_u`` exponential averages of the user's recent errors (users rate in
   sessions; their errors run in streaks); ``w`` is recursive least squares, learned online.
   The result is clipped to the range of ratings seen so far.

State is kept per owner as in :mod:`online_models.mf_params`: :class:`UserPart` by user,
:class:`ItemPart` by item, one :class:`GlobalPart`. Unlike MF's immutable parts these are small
mutable slot objects: :func:`learn_step` updates the three in place (cheaper than building new
ones per rating) and each is written back to its owner.

>>> cfg = KalmanConfig(n_factors=2)
>>> user, item, glob = initial_user(cfg, "u"), initial_item(cfg, "i"), initial_global(cfg)
>>> for _ in range(30):
...     learn_step(user, item, glob, 4.0, cfg)
>>> round(predict(user, item, glob, cfg), 2), user.n, item.n, glob.n
(4.0, 30, 30, 30)
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field, fields

import numpy as np

from online_models.mf_params import STATE_FLOAT, EventTargets, Vector, initial_factors

__all__ = [
    "GlobalPart",
    "ItemPart",
    "KalmanConfig",
    "UserPart",
    "initial_global",
    "initial_item",
    "initial_user",
    "learn_step",
    "predict",
]

_CONFIG = struct.Struct("<H14dq4d")
_USER = struct.Struct("<12dqH")  # b, s, c, 6 covariances, fast, slow, sq_err, n, n_factors
_ITEM = struct.Struct("<3dqH")  # b, var, sq_err, n, n_factors
_GLOBAL = struct.Struct("<dq22d")  # mean, n, lo, hi, 4 blend weights, 16 blend covariances


@dataclass(frozen=True)
class KalmanConfig:
    """Hyperparameters (chosen on MovieLens 100K, prequential; docs/adr/0008-implicit-learner.md).

    >>> KalmanConfig().n_factors, KalmanConfig().prior_scale
    (20, 0.2)
    """

    n_factors: int = 20
    latent_lr: float = 0.1  #: SGD step of the factors per unit of error (River's lr 0.05 on 2 * error)
    init_sigma: float = 0.07  #: of the initial factors (0.05 and 0.07 best on ML-100K, 0.1 on the synthetic file)
    prior_bias: float = 0.25  #: prior variance of a user's bias
    prior_scale: float = 0.2  #: prior variance of a user's weight on item quality (prior mean 1)
    prior_pop: float = 0.02  #: prior variance of a user's weight on item popularity
    prior_item: float = 0.4  #: prior variance of an item's bias
    user_drift: float = 0.002  #: variance a user's bias gains per rating (its learning-rate floor)
    item_drift: float = 0.0002  #: variance an item's bias gains per rating
    noise: float = 1.0  #: prior observation noise (variance of a rating around its prediction)
    noise_weight: float = 10.0  #: pseudo-ratings of that prior in a user's and an item's noise
    pop_center: float = 4.0  #: ``ln(1 + ratings)`` of an item of average popularity
    fast_rate: float = 0.3  #: rate of the user's fast average of errors
    slow_rate: float = 0.1  #: rate of the user's slow average of errors
    blend_prior: float = 10.0  #: initial variance of the blend weights
    seed: int = 0
    targets: EventTargets = field(default_factory=EventTargets)

    def pack(self) -> bytes:
        """Fixed-size bytes of every hyperparameter."""
        t = self.targets
        return _CONFIG.pack(
            self.n_factors, self.latent_lr, self.init_sigma, self.prior_bias, self.prior_scale, self.prior_pop,
            self.prior_item, self.user_drift, self.item_drift, self.noise, self.noise_weight, self.pop_center,
            self.fast_rate, self.slow_rate, self.blend_prior, self.seed, t.view, t.click, t.add_to_cart, t.purchase,
        )  # fmt: skip

    @classmethod
    def unpack_from(cls, data: bytes, offset: int) -> tuple[KalmanConfig, int]:
        """Read :meth:`pack` output at ``offset``; return it and the offset after it."""
        values = _CONFIG.unpack_from(data, offset)
        names = [f.name for f in fields(cls)][:16]
        cfg = cls(**dict(zip(names, values[:16], strict=True)), targets=EventTargets(*values[16:]))
        return cfg, offset + _CONFIG.size


@dataclass(slots=True)
class UserPart:
    """What a user owns: the baseline weights and their covariance, error averages, factors.

    >>> u = initial_user(KalmanConfig(n_factors=3), "u1")
    >>> (u.bias, u.scale, u.pop), UserPart.from_bytes(u.to_bytes()) == u
    ((0.0, 1.0, 0.0), True)
    """

    bias: float
    scale: float
    pop: float
    cov: list[float]  #: upper triangle of the 3x3 covariance: bb, bs, bc, ss, sc, cc
    fast: float
    slow: float
    sq_err: float  #: sum of squared errors of the user's predictions
    n: int
    factors: Vector

    def to_bytes(self) -> bytes:
        """Fixed-size floats, the count, then the raw little-endian float64 factors."""
        head = _USER.pack(self.bias, self.scale, self.pop, *self.cov, self.fast, self.slow, self.sq_err,
                          self.n, len(self.factors))  # fmt: skip
        return head + self.factors.astype(STATE_FLOAT).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> UserPart:
        """Inverse of :meth:`to_bytes` (at ``offset``)."""
        b, s, c, *cov, fast, slow, sq, n, k = _USER.unpack_from(data, offset)
        factors = np.frombuffer(data, STATE_FLOAT, k, offset + _USER.size).astype(np.float64)
        return cls(b, s, c, cov[:6], fast, slow, sq, n, factors)

    def size(self) -> int:
        """Length of :meth:`to_bytes`."""
        return _USER.size + 8 * len(self.factors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserPart) and self.to_bytes() == other.to_bytes()


@dataclass(slots=True)
class ItemPart:
    """What an item owns: its bias and the bias's variance, its error sum and count, factors.

    >>> i = initial_item(KalmanConfig(n_factors=3), "i1")
    >>> i.var, ItemPart.from_bytes(i.to_bytes()) == i
    (0.4, True)
    """

    bias: float
    var: float
    sq_err: float
    n: int
    factors: Vector

    def to_bytes(self) -> bytes:
        """Fixed-size floats, the count, then the raw little-endian float64 factors."""
        head = _ITEM.pack(self.bias, self.var, self.sq_err, self.n, len(self.factors))
        return head + self.factors.astype(STATE_FLOAT).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> ItemPart:
        """Inverse of :meth:`to_bytes` (at ``offset``)."""
        b, var, sq, n, k = _ITEM.unpack_from(data, offset)
        return cls(b, var, sq, n, np.frombuffer(data, STATE_FLOAT, k, offset + _ITEM.size).astype(np.float64))

    def size(self) -> int:
        """Length of :meth:`to_bytes`."""
        return _ITEM.size + 8 * len(self.factors)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ItemPart) and self.to_bytes() == other.to_bytes()


def _identity(scale: float) -> list[float]:
    return [scale if row == col else 0.0 for row in range(4) for col in range(4)]


@dataclass(slots=True)
class GlobalPart:
    """The shared part: running mean, count, rating range seen, blend weights and their covariance.

    >>> g = GlobalPart()
    >>> g.weights, GlobalPart.from_bytes(g.to_bytes()) == g
    ([0.0, 1.0, 0.0, 0.0], True)
    """

    mean: float = 0.0
    n: int = 0
    lo: float = math.inf
    hi: float = -math.inf
    weights: list[float] = field(default_factory=lambda: [0.0, 1.0, 0.0, 0.0])
    blend_cov: list[float] = field(default_factory=lambda: _identity(1.0))

    def to_bytes(self) -> bytes:
        """Fixed-size bytes of every field."""
        return _GLOBAL.pack(self.mean, self.n, self.lo, self.hi, *self.weights, *self.blend_cov)

    @classmethod
    def from_bytes(cls, data: bytes, offset: int = 0) -> GlobalPart:
        """Inverse of :meth:`to_bytes` (at ``offset``)."""
        mean, n, lo, hi, *rest = _GLOBAL.unpack_from(data, offset)
        return cls(mean, n, lo, hi, rest[:4], rest[4:])

    SIZE = _GLOBAL.size


def initial_global(cfg: KalmanConfig) -> GlobalPart:
    """The shared part before any rating: the blend passes ``core`` through, at the prior variance."""
    return GlobalPart(blend_cov=_identity(cfg.blend_prior))


def initial_user(cfg: KalmanConfig, user: str) -> UserPart:
    """A user never learned from: the prior means and covariance, factors seeded by its key."""
    cov = [cfg.prior_bias, 0.0, 0.0, cfg.prior_scale, 0.0, cfg.prior_pop]
    factors = initial_factors(cfg.seed, "user", user, cfg.n_factors, 0.0, cfg.init_sigma)
    return UserPart(0.0, 1.0, 0.0, cov, 0.0, 0.0, 0.0, 0, factors)


def initial_item(cfg: KalmanConfig, item: str) -> ItemPart:
    """An item never learned from: zero bias at the prior variance, factors seeded by its key."""
    factors = initial_factors(cfg.seed, "item", item, cfg.n_factors, 0.0, cfg.init_sigma)
    return ItemPart(0.0, cfg.prior_item, 0.0, 0, factors)


def _core(user: UserPart, item: ItemPart, mean: float, pop: float) -> float:
    return mean + user.bias + user.scale * item.bias + user.pop * pop + float(np.dot(user.factors, item.factors))


def _blend(core: float, user: UserPart, weights: list[float]) -> float:
    return weights[0] + weights[1] * core + weights[2] * user.fast + weights[3] * user.slow


def predict(user: UserPart, item: ItemPart, glob: GlobalPart, cfg: KalmanConfig) -> float:
    """The blended prediction, clipped to the range of ratings learned so far (parts untouched)."""
    y = _blend(_core(user, item, glob.mean, math.log1p(item.n) - cfg.pop_center), user, glob.weights)
    return min(max(y, glob.lo), glob.hi) if glob.n else y


def _learn_blend(glob: GlobalPart, core: float, user: UserPart, y: float) -> None:
    """One recursive-least-squares step of the blend weights on ``(1, core, fast, slow) -> y``."""
    x = (1.0, core, user.fast, user.slow)
    w, p = glob.weights, glob.blend_cov
    px = [p[r] * x[0] + p[r + 1] * x[1] + p[r + 2] * x[2] + p[r + 3] * x[3] for r in (0, 4, 8, 12)]
    denominator = 1.0 + x[0] * px[0] + x[1] * px[1] + x[2] * px[2] + x[3] * px[3]
    error = y - (w[0] + w[1] * x[1] + w[2] * x[2] + w[3] * x[3])
    gain = [v / denominator for v in px]
    glob.weights = [w[r] + gain[r] * error for r in range(4)]
    glob.blend_cov = [p[4 * r + c] - gain[r] * px[c] for r in range(4) for c in range(4)]


def _learn_baseline(user: UserPart, item: ItemPart, pop: float, error: float, cfg: KalmanConfig) -> None:
    """One Kalman step of the user's (bias, scale, pop) on ``(1, b_i, pop_i)`` and of the item's bias."""
    bb, bs, bc, ss, sc, cc = user.cov
    bb += cfg.user_drift
    var_i = item.var + cfg.item_drift
    h1, s = item.bias, user.scale
    p0, p1, p2 = bb + bs * h1 + bc * pop, bs + ss * h1 + sc * pop, bc + sc * h1 + cc * pop
    w = cfg.noise_weight
    noise = math.sqrt((cfg.noise * w + user.sq_err) / (w + user.n) * (cfg.noise * w + item.sq_err) / (w + item.n))
    total = p0 + p1 * h1 + p2 * pop + var_i * s * s + noise
    k0, k1, k2, k_item = p0 / total, p1 / total, p2 / total, var_i * s / total
    user.bias += k0 * error
    user.scale += k1 * error
    user.pop += k2 * error
    item.bias += k_item * error
    user.cov = [bb - k0 * p0, bs - k0 * p1, bc - k0 * p2, ss - k1 * p1, sc - k1 * p2, cc - k2 * p2]
    item.var = var_i - k_item * s * var_i


def learn_step(user: UserPart, item: ItemPart, glob: GlobalPart, y: float, cfg: KalmanConfig) -> None:
    """Learn one rating: the blend, the user's error averages, the mean, the baseline, the factors (in place)."""
    pop = math.log1p(item.n) - cfg.pop_center
    core = _core(user, item, glob.mean, pop)
    _learn_blend(glob, core, user, y)
    residual = y - core
    user.fast += cfg.fast_rate * (residual - user.fast)
    user.slow += cfg.slow_rate * (residual - user.slow)
    squared = residual * residual
    user.sq_err += squared
    item.sq_err += squared
    user.n += 1
    item.n += 1
    n = glob.n = glob.n + 1
    old_mean = glob.mean
    glob.mean += (y - old_mean) / n
    glob.lo, glob.hi = min(glob.lo, y), max(glob.hi, y)
    error = residual - (glob.mean - old_mean)
    _learn_baseline(user, item, pop, error, cfg)
    step = cfg.latent_lr * error
    p_u = user.factors
    user.factors = p_u + step * item.factors
    item.factors = item.factors + step * p_u
