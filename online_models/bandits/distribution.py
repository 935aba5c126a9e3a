"""Arm distributions of the context-free bandits: the probability that each arm is chosen, and a choice from it.

Pure functions (no I/O, no state): what serving caches per arm-table version so a decision needs
no per-request Monte Carlo, and what the learners in :mod:`~online_models.bandits.mab` share.

- :func:`beta_win_probabilities` is Thompson sampling's exact arm distribution: the probability
  that arm ``i``'s Beta posterior draw is the largest, ``P_i = ∫ f_i(x) Π_{j≠i} F_j(x) dx``, by
  Gauss-Legendre quadrature on panels cut at quantiles of every posterior (absolute error below
  ``1e-12`` in the tests, which compare it with the closed form for integer parameters). Arms
  with the same posterior get exactly the same probability.
- UCB's and epsilon-greedy's are closed forms (``UCB.arm_probabilities``,
  ``EpsilonGreedy.arm_probabilities``); :func:`epsilon_greedy_draw` is the draw their ``pull`` makes.
- :func:`choose` picks an index from a distribution by inverse CDF with a uniform number, and
  :func:`uniform_from_seed` derives that number from a 64-bit seed (a request's), so a choice is
  reproducible from the seed and its propensity is exactly the probability it had.

>>> beta_win_probabilities([(1.0, 1.0), (1.0, 1.0), (1.0, 1.0), (1.0, 1.0)])
[0.25, 0.25, 0.25, 0.25]
>>> p = beta_win_probabilities([(2.0, 1.0), (1.0, 1.0)])   # P(X > Y), X ~ Beta(2, 1), Y ~ U(0, 1): 2/3
>>> round(p[0], 12), round(p[1], 12)
(0.666666666667, 0.333333333333)
>>> choose([0.2, 0.5, 0.3], 0.69), choose([0.2, 0.5, 0.3], 0.7)
(1, 2)
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["beta_win_probabilities", "choose", "epsilon_greedy_draw", "uniform_from_seed"]

#: Quadrature nodes per panel.
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(10)
#: Posterior mass left out in each tail: below ``_TAIL`` quantile an arm's CDF counts as 0, above
#: ``1 - _TAIL`` as 1 (each changes a probability by at most ``_TAIL``).
_TAIL = 1e-16
#: Where each posterior cuts the integration panels (its quantiles), dense in the tails.
_CUTS = np.array([_TAIL, 1e-12, 1e-8, 1e-5, 1e-3, 0.01, 0.04, 0.1, 0.2, 0.35, 0.5,
                  0.65, 0.8, 0.9, 0.96, 0.99, 1 - 1e-3, 1 - 1e-5, 1 - 1e-8, 1 - 1e-12, 1 - _TAIL])
#: log F below an arm's lower tail (``exp`` of it is 0.0): keeps ``S - log F_i`` finite.
_LOG_ZERO = -1e4
#: Largest ratio of a panel's ends near 0 (or of ``1 - x`` near 1) before it is cut geometrically.
_SPAN = 16.0
_SMALLEST = float(np.finfo(np.float64).tiny)

_Array = np.ndarray[Any, np.dtype[np.float64]]


def beta_win_probabilities(params: Sequence[tuple[float, float]]) -> list[float]:
    """Per arm, the probability that its ``Beta(alpha, beta)`` draw is the largest of all arms' draws.

    ``params`` are the arms' posterior ``(alpha, beta)``, both positive. The result sums to 1.

    >>> beta_win_probabilities([(91.0, 11.0), (2.0, 100.0)])    # b cannot win against Beta(91, 11)
    [1.0, 0.0]
    """
    table = np.asarray(params, dtype=np.float64).reshape(-1, 2)
    if len(table) == 0:
        raise ValueError("no arms")
    if not np.all(np.isfinite(table)) or np.any(table <= 0):
        raise ValueError("Beta parameters are positive and finite")
    distinct, inverse, counts = np.unique(table, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    if len(distinct) == 1:
        return [1.0 / len(table)] * len(table)
    per_distinct = _distinct_win_probabilities(distinct[:, 0], distinct[:, 1], counts.astype(np.float64))
    probabilities = per_distinct[inverse]
    normalised: list[float] = (probabilities / probabilities.sum()).tolist()
    return normalised


def _distinct_win_probabilities(alpha: _Array, beta: _Array, counts: _Array) -> _Array:
    """Win probability of one arm of each distinct posterior (``counts`` arms share each)."""
    # Here, not at the top: scipy.special costs ~0.2 s of CPU to import, which every start of the
    # job's graph and of the CLI paid; this runs once per arm table, not per event.
    from scipy import special

    lo = special.betaincinv(alpha, beta, _TAIL)
    hi = special.betaincinv(alpha, beta, 1.0 - _TAIL)
    start, stop = float(lo.max()), float(hi.max())  # below ``start`` some arm's CDF is < _TAIL: nobody wins
    live = np.flatnonzero(hi > start)  # an arm whose posterior ends below ``start`` (almost) never wins
    a, b, lo, hi = alpha[live, None], beta[live, None], lo[live, None], hi[live, None]
    x, w = _nodes(np.concatenate([special.betaincinv(a, b, _CUTS[None, :]).ravel(), [start, stop]]), start, stop)
    inside = (x[None, :] >= lo) & (x[None, :] <= hi)  # elsewhere F is 0 (below) or 1 (above), f is 0
    rows, cols = np.nonzero(inside)
    xs, a_in, b_in = x[cols], alpha[live][rows], beta[live][rows]
    with np.errstate(divide="ignore", under="ignore"):
        log_cdf_in = np.maximum(np.log(special.betainc(a_in, b_in, xs)), _LOG_ZERO)
        log_pdf_in = special.xlogy(a_in - 1.0, xs) + special.xlog1py(b_in - 1.0, -xs) - special.betaln(a_in, b_in)
    log_cdf = np.where(x[None, :] < lo, _LOG_ZERO, 0.0)
    log_cdf[rows, cols] = log_cdf_in
    log_all = (counts[live, None] * log_cdf).sum(axis=0)
    density = np.zeros_like(log_cdf)
    with np.errstate(under="ignore", over="ignore"):
        density[rows, cols] = np.exp(log_pdf_in + log_all[cols] - log_cdf_in)
    result = np.zeros(len(alpha))
    result[live] = np.nan_to_num(density, posinf=0.0) @ w
    return result


def _nodes(cuts: _Array, start: float, stop: float) -> tuple[_Array, _Array]:
    """Gauss-Legendre nodes and weights on panels between ``cuts`` in [start, stop].

    A panel spanning more than a factor ``_SPAN`` in ``x`` (near 0) or in ``1 - x`` (near 1) is
    cut geometrically, so power-law tails of posteriors with a parameter below 1 stay smooth on each.
    """
    edges = np.unique(np.clip(cuts, start, stop))
    extra = [edges]
    for left, right in itertools.pairwise(edges.tolist()):
        if left > 0 and right / left > _SPAN:
            extra.append(np.geomspace(left, right, _pieces(right / left)))
        if right < 1 and (1 - left) / (1 - right) > _SPAN:
            extra.append(1.0 - np.geomspace(1 - left, 1 - right, _pieces((1 - left) / (1 - right))))
    edges = np.unique(np.concatenate(extra))
    half = np.diff(edges)[:, None] / 2.0
    x = ((edges[:-1, None] + half) + half * _NODES[None, :]).ravel()
    return np.clip(x, _SMALLEST, 1.0 - 2.0**-53), (half * _WEIGHTS[None, :]).ravel()


def _pieces(ratio: float) -> int:
    """Points of a geometric cut of a panel whose ends differ by ``ratio``: factors of at most ``_SPAN``."""
    return int(np.log(ratio) / np.log(_SPAN)) + 2


def choose(probabilities: Sequence[float], u: float) -> int:
    """The index whose cumulative-probability interval holds ``u`` in [0, 1) (inverse CDF).

    An arm with probability 0 is never chosen; ``u`` beyond the (rounded) total picks the last
    arm with a positive probability.

    >>> choose([0.0, 1.0, 0.0], 0.0), choose([0.5, 0.5, 0.0], 0.9999999999999999)
    (1, 1)
    """
    total = 0.0
    last = -1
    for index, p in enumerate(probabilities):
        if p > 0.0:
            total += p
            last = index
            if u < total:
                return index
    if last < 0:
        raise ValueError("no arm has a positive probability")
    return last


_ARM_HASH = hashlib.blake2b(digest_size=8, person=b"pulse-arm")


def uniform_from_seed(seed: int) -> float:
    """A number in [0, 1) determined by ``seed`` (53 bits of BLAKE2b of its 8 bytes), uniform over seeds.

    >>> uniform_from_seed(7) == uniform_from_seed(7), 0.0 <= uniform_from_seed(2**64 - 1) < 1.0
    (True, True)
    """
    hasher = _ARM_HASH.copy()  # the keyed state copied: ~0.2 us less than a new blake2b per decision
    hasher.update(seed.to_bytes(8, "little"))
    return (int.from_bytes(hasher.digest(), "little") >> 11) * 2.0**-53


def epsilon_greedy_draw(n_arms: int, best: Sequence[int], epsilon: float, rng: np.random.Generator) -> int:
    """Epsilon-greedy's choice (an index): with probability ``epsilon`` uniform, else uniform among ``best``."""
    if rng.random() < epsilon:
        return int(rng.integers(n_arms))
    return best[int(rng.integers(len(best)))]
