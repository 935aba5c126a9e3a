"""The hidden ground truth of the synthetic stream: who the users and items are, what they like.

Everything here is fixed by the config and its seed: Zipf popularity of items and activity of
users (:func:`zipf_cdf`, :func:`draw`), segments and categories, the logging policy's arms with
their propensities and click-through rates, and the low-rank user x item :class:`Affinity`
behind ratings (:class:`World`), and, when ``taste`` > 0, each user's taste category that a share
of their visits goes to (:meth:`World.with_tastes`) and whose items they rate higher.
Each purpose draws from its own :func:`random_stream`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from producers.sources.synthetic_config import SyntheticConfig

__all__ = ["TASTE_BONUS", "Affinity", "Array", "World", "draw", "random_stream", "zipf_cdf"]

Array = npt.NDArray[Any]

#: With planted tastes, how many stars higher a user rates items of their taste category.
TASTE_BONUS = 1.0


def random_stream(seed: int, stream: int) -> np.random.Generator:
    """Independent, reproducible random streams per purpose."""
    return np.random.default_rng([seed, stream])


def zipf_cdf(n: int, exponent: float) -> Array:
    """Cumulative probabilities of ranks ``0..n-1``, rank ``r`` weighing ``(r + 1) ** -exponent``."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    cdf: Array = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf


def draw(cdf: Array, rng: np.random.Generator, size: int | tuple[int, ...]) -> Array:
    """Ranks drawn from ``cdf``, one uniform of ``rng`` each, in an array of shape ``size``."""
    drawn: Array = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)
    return drawn


class Affinity:
    """Hidden low-rank ground truth for ratings: ``3.5 + b_u + b_i + 0.9 * <p_u, q_i> + noise``.

    Built only from ``(seed, n_users, n_items, rank)``, so
    :func:`~producers.sources.synthetic.synthetic_events` and
    :func:`~producers.sources.synthetic.synthetic_ratings` with the same values share it.

    >>> a = Affinity(seed=1, n_users=3, n_items=4)
    >>> a.expected(np.array([0, 1]), np.array([2, 3])).shape
    (2,)
    >>> set(a.ratings(np.array([0] * 50), np.arange(50) % 4, np.random.default_rng(0)).tolist()) <= {
    ...     1.0, 2.0, 3.0, 4.0, 5.0}
    True
    """

    def __init__(self, seed: int, n_users: int, n_items: int, rank: int = 4, noise: float = 0.4) -> None:
        rng = random_stream(seed, 1)
        scale = rank**-0.25  # <p_u, q_i> has unit variance
        self.user_bias = rng.normal(0.0, 0.3, n_users)
        self.item_bias = rng.normal(0.0, 0.4, n_items)
        self.user_factors = rng.normal(0.0, scale, (n_users, rank))
        self.item_factors = rng.normal(0.0, scale, (n_items, rank))
        self.noise = noise

    def expected(self, users: Array, items: Array) -> Array:
        """Noise-free, unclipped affinity of each (user, item) index pair."""
        dot = np.einsum("ij,ij->i", self.user_factors[users], self.item_factors[items])
        expected: Array = 3.5 + self.user_bias[users] + self.item_bias[items] + 0.9 * dot
        return expected

    def ratings(self, users: Array, items: Array, rng: np.random.Generator, shift: Array | float = 0.0) -> Array:
        """Observed star ratings: expected + ``shift`` + Gaussian noise, rounded and clipped to 1..5."""
        noisy = self.expected(users, items) + shift + rng.normal(0.0, self.noise, len(users))
        stars: Array = np.clip(np.rint(noisy), 1.0, 5.0)
        return stars


class World:
    """Users, items and the logging policy of one config (fixed for the whole stream)."""

    def __init__(self, c: SyntheticConfig) -> None:
        rng = random_stream(c.seed, 0)
        # Popularity rank -> id, so ids do not give popularity away.
        self.item_of_rank = rng.permutation(c.n_items)
        self.user_of_rank = rng.permutation(c.n_users)
        self.item_cdf = zipf_cdf(c.n_items, c.zipf_exponent)
        self.user_cdf = zipf_cdf(c.n_users, c.user_zipf_exponent)
        self.user_segment = rng.integers(0, c.n_segments, c.n_users)
        self.item_category = rng.integers(0, c.n_categories, c.n_items)
        self.arms = rng.choice(c.n_items, size=c.n_arms, replace=False)
        # Logging policy: a segment-dependent softmax mixed with uniform, so every p > 0.
        logits = rng.normal(0.0, 1.0, (c.n_segments, c.n_arms))
        soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        self.arm_probs = 0.8 * soft + 0.2 / c.n_arms
        self.arm_cdf = np.cumsum(self.arm_probs, axis=1)
        self.arm_cdf[:, -1] = 1.0
        self.ctr = np.clip(c.mean_ctr * rng.lognormal(-0.18, 0.6, (c.n_segments, c.n_arms)), 0.0, 1.0)
        self.affinity = Affinity(c.seed, c.n_users, c.n_items, c.rank, c.rating_noise)
        # Planted tastes draw from streams of their own, so taste=0 leaves the stream as it was.
        self.taste = c.taste
        self.user_taste = random_stream(c.seed, 4).integers(0, c.n_categories, c.n_users)
        by_popularity = self.item_of_rank
        self.category_items = [by_popularity[self.item_category[by_popularity] == k] for k in range(c.n_categories)]
        self.category_cdf = [zipf_cdf(max(len(items), 1), c.zipf_exponent) for items in self.category_items]
        prefix = f"syn{c.seed}"
        self.user_names = [f"u{i}" for i in range(c.n_users)]
        self.item_names = [f"i{i}" for i in range(c.n_items)]
        self.segment_names = [f"s{i}" for i in range(c.n_segments)]
        self.category_names = [f"c{i}" for i in range(c.n_categories)]
        self.prefix = prefix

    def ratings(self, users: Array, items: Array, rng: np.random.Generator) -> Array:
        """Star ratings of the affinity, :data:`TASTE_BONUS` higher in the user's taste category (when planted)."""
        if self.taste <= 0:
            return self.affinity.ratings(users, items, rng)
        liked = self.item_category[items] == self.user_taste[users]
        return self.affinity.ratings(users, items, rng, shift=TASTE_BONUS * liked)

    def with_tastes(self, users: Array, items: Array, rng: np.random.Generator) -> Array:
        """``items`` with a ``taste`` share of visits moved to an item of the visiting user's taste category.

        >>> from producers.sources.synthetic_config import SyntheticConfig
        >>> w = World(SyntheticConfig(seed=1, n_users=40, n_items=300, taste=1.0))
        >>> users = np.arange(40)
        >>> moved = w.with_tastes(users, np.zeros(40, dtype=np.int64), np.random.default_rng(0))
        >>> bool((w.item_category[moved] == w.user_taste[users]).all())
        True
        """
        if self.taste <= 0:
            return items
        items = items.copy()
        moved = rng.random(len(items)) < self.taste
        tastes = self.user_taste[users]
        for k, (members, cdf) in enumerate(zip(self.category_items, self.category_cdf, strict=True)):
            chosen = np.flatnonzero(moved & (tastes == k))
            if len(chosen) and len(members):  # a tiny world may leave a category empty
                items[chosen] = members[draw(cdf, rng, len(chosen))]
        return items
