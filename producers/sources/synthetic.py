"""A seeded synthetic interaction stream with known ground truth.

The generator draws everything in numpy batches and only builds :class:`Event` objects in
the Python loop, so it costs a few µs per event. What it simulates:

* items with Zipf popularity and a category each; users with Zipf-ish activity and a segment;
* sessions: a user is idle for more than ``session_gap_ms`` between two sessions, and inside a
  session consecutive events are at most ``session_gap_ms // 2`` apart;
* a funnel per item visit: view, then maybe click, add_to_cart, purchase (each step rarer), and
  sometimes a rating whose value comes from a hidden low-rank user x item affinity
  (:class:`Affinity`), so matrix factorisation has something to learn;
* impressions: a logging policy picks one of ``n_arms`` items with known, segment-dependent
  probabilities (``Decision.propensity``); a hidden per (segment, arm) click-through rate decides
  whether a click with ``value=1.0`` and ``context["request_id"]`` follows.

The stream is ordered by event time (non-decreasing globally, hence per user) and
event ids are unique and the same for the same config.

>>> events = list(synthetic_events(SyntheticConfig(seed=1, n_users=50, n_items=200), limit=5))
>>> [e.event_id for e in events] == [e.event_id for e in
...     synthetic_events(SyntheticConfig(seed=1, n_users=50, n_items=200), limit=5)]
True
>>> all(a.event_time_ms <= b.event_time_ms for a, b in zip(events, events[1:]))
True
"""

from __future__ import annotations

import itertools
import operator
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from schemas.events import Decision, Event, EventType

Array = npt.NDArray[Any]

#: 2024-01-01T00:00:00Z, the default start of synthetic time.
DEFAULT_START_MS = 1_704_067_200_000
LOGGING_POLICY = "synthetic-logging"
DEVICES = ("mobile", "desktop", "app")
_DEVICE_P = (0.55, 0.3, 0.15)

# Slots of one item visit, in the order they happen. _REWARD is the click answering _IMP.
_IMP, _REWARD, _VIEW, _CLICK, _CART, _PURCHASE, _RATING = range(7)
_N_SLOTS = 7
_USER_CANDIDATES = 4


@dataclass(frozen=True, slots=True)
class EventMix:
    """Relative frequencies of the funnel event types (impressions are set apart).

    Each funnel step must be no more frequent than the one before it
    (view >= click >= add_to_cart >= purchase): a click only follows a view of the same item,
    and so on. Ratings are independent of the funnel, at ``rating / view`` per visit.

    >>> EventMix().click_rate
    0.35
    """

    view: float = 0.6
    click: float = 0.21
    add_to_cart: float = 0.08
    purchase: float = 0.03
    rating: float = 0.04

    def __post_init__(self) -> None:
        steps = (self.view, self.click, self.add_to_cart, self.purchase)
        if self.view <= 0 or min(*steps, self.rating) < 0:
            raise ValueError(f"event mix weights must be >= 0 and view > 0, got {self}")
        if any(later > earlier for earlier, later in itertools.pairwise(steps)):
            raise ValueError(f"funnel weights must not increase (view >= click >= cart >= purchase): {self}")
        if self.rating > self.view:
            raise ValueError(f"rating weight must not exceed view weight: {self}")

    @property
    def click_rate(self) -> float:
        """P(click | view)."""
        return self.click / self.view

    @property
    def cart_rate(self) -> float:
        """P(add_to_cart | click)."""
        return self.add_to_cart / self.click if self.click else 0.0

    @property
    def purchase_rate(self) -> float:
        """P(purchase | add_to_cart)."""
        return self.purchase / self.add_to_cart if self.add_to_cart else 0.0

    @property
    def rating_rate(self) -> float:
        """P(rating | view)."""
        return self.rating / self.view


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Knobs of :func:`synthetic_events`; the same config always gives the same stream.

    >>> SyntheticConfig(n_users=10).n_users
    10
    """

    seed: int = 7
    n_users: int = 10_000
    n_items: int = 5_000
    #: Item popularity ~ rank ** -zipf_exponent.
    zipf_exponent: float = 1.1
    #: User activity ~ rank ** -user_zipf_exponent (busy users are skipped while in a session).
    user_zipf_exponent: float = 0.8
    #: Minimum idle time between two sessions of a user; events inside a session are closer.
    session_gap_ms: int = 30 * 60 * 1000
    mean_events_per_session: float = 10.0
    mix: EventMix = field(default_factory=EventMix)
    #: Probability that an item visit is preceded by an impression of the logging policy.
    impression_rate: float = 0.3
    n_arms: int = 10
    #: Mean of the hidden click-through rates of (segment, arm).
    mean_ctr: float = 0.08
    n_segments: int = 8
    n_categories: int = 20
    #: Rank of the hidden user x item affinity behind ratings.
    rank: int = 4
    rating_noise: float = 0.4
    start_time_ms: int = DEFAULT_START_MS
    #: Mean time between consecutive events of one session.
    mean_inter_event_ms: int = 15_000
    #: Mean time between the starts of two sessions (of any users).
    mean_session_interarrival_ms: int = 1_000

    def __post_init__(self) -> None:
        positive = {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "session_gap_ms": self.session_gap_ms,
            "n_arms": self.n_arms,
            "n_segments": self.n_segments,
            "n_categories": self.n_categories,
            "rank": self.rank,
            "mean_inter_event_ms": self.mean_inter_event_ms,
            "mean_session_interarrival_ms": self.mean_session_interarrival_ms,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.n_arms > self.n_items:
            raise ValueError(f"n_arms ({self.n_arms}) must not exceed n_items ({self.n_items})")
        if self.mean_events_per_session < 1:
            raise ValueError(f"mean_events_per_session must be >= 1, got {self.mean_events_per_session}")
        for name in ("impression_rate", "mean_ctr"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.zipf_exponent < 0 or self.user_zipf_exponent < 0 or self.rating_noise < 0:
            raise ValueError("zipf exponents and rating_noise must be >= 0")


def _rng(seed: int, stream: int) -> np.random.Generator:
    """Independent, reproducible random streams per purpose."""
    return np.random.default_rng([seed, stream])


def _zipf_cdf(n: int, exponent: float) -> Array:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    cdf: Array = np.cumsum(weights)
    cdf /= cdf[-1]
    return cdf


def _draw(cdf: Array, rng: np.random.Generator, size: int | tuple[int, ...]) -> Array:
    drawn: Array = np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)
    return drawn


class Affinity:
    """Hidden low-rank ground truth for ratings: ``3.5 + b_u + b_i + 0.9 * <p_u, q_i> + noise``.

    Built only from ``(seed, n_users, n_items, rank)``, so :func:`synthetic_events` and
    :func:`synthetic_ratings` with the same values share it.

    >>> a = Affinity(seed=1, n_users=3, n_items=4)
    >>> a.expected(np.array([0, 1]), np.array([2, 3])).shape
    (2,)
    >>> set(a.ratings(np.array([0] * 50), np.arange(50) % 4, np.random.default_rng(0)).tolist()) <= {
    ...     1.0, 2.0, 3.0, 4.0, 5.0}
    True
    """

    def __init__(self, seed: int, n_users: int, n_items: int, rank: int = 4, noise: float = 0.4) -> None:
        rng = _rng(seed, 1)
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

    def ratings(self, users: Array, items: Array, rng: np.random.Generator) -> Array:
        """Observed star ratings: expected + Gaussian noise, rounded and clipped to 1..5."""
        noisy = self.expected(users, items) + rng.normal(0.0, self.noise, len(users))
        stars: Array = np.clip(np.rint(noisy), 1.0, 5.0)
        return stars


class _World:
    """Users, items and the logging policy of one config (fixed for the whole stream)."""

    def __init__(self, c: SyntheticConfig) -> None:
        rng = _rng(c.seed, 0)
        # Popularity rank -> id, so ids do not give popularity away.
        self.item_of_rank = rng.permutation(c.n_items)
        self.user_of_rank = rng.permutation(c.n_users)
        self.item_cdf = _zipf_cdf(c.n_items, c.zipf_exponent)
        self.user_cdf = _zipf_cdf(c.n_users, c.user_zipf_exponent)
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
        prefix = f"syn{c.seed}"
        self.user_names = [f"u{i}" for i in range(c.n_users)]
        self.item_names = [f"i{i}" for i in range(c.n_items)]
        self.segment_names = [f"s{i}" for i in range(c.n_segments)]
        self.category_names = [f"c{i}" for i in range(c.n_categories)]
        self.prefix = prefix


def _events_per_visit(c: SyntheticConfig) -> float:
    m = c.mix
    funnel = 1 + m.click_rate * (1 + m.cart_rate * (1 + m.purchase_rate))
    return funnel + m.rating_rate + c.impression_rate * (1 + c.mean_ctr)


_time_of = operator.attrgetter("event_time_ms")


def synthetic_events(config: SyntheticConfig, limit: int | None = None) -> Iterator[Event]:
    """Yield a time-ordered synthetic stream; endless when ``limit`` is None.

    >>> c = SyntheticConfig(seed=3, n_users=20, n_items=50)
    >>> events = list(synthetic_events(c, limit=200))
    >>> len(events), len({e.event_id for e in events})
    (200, 200)
    >>> all(0 < e.decision.propensity <= 1 for e in events if e.type.value == "impression")
    True
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    return _generate(config, limit)


def _generate(c: SyntheticConfig, limit: int | None) -> Iterator[Event]:
    w = _World(c)
    rng = _rng(c.seed, 2)
    mix = c.mix
    mean_visits = max(1.0, c.mean_events_per_session / _events_per_visit(c))
    n_sessions = max(16, int(4096 / c.mean_events_per_session))
    max_interval = max(1, c.session_gap_ms // 4)
    free_at = [c.start_time_ms] * c.n_users  # a user may start a session at or after this time
    clock = c.start_time_ms
    emitted = 0
    next_id = 0
    visit_base = 0
    pending: list[Event] = []
    user_names, item_names = w.user_names, w.item_names
    segment_names, category_names = w.segment_names, w.category_names
    user_segment = w.user_segment.tolist()
    item_category = w.item_category.tolist()
    id_prefix, request_prefix = f"{w.prefix}-", f"{w.prefix}-q"
    view_t, click_t, cart_t = EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART
    purchase_t, rating_t, imp_t = EventType.PURCHASE, EventType.RATING, EventType.IMPRESSION

    while limit is None or emitted < limit:
        # --- structure of n_sessions sessions, independent of who the users are ---
        visits = 1 + rng.poisson(mean_visits - 1.0, n_sessions)
        n_visits = int(visits.sum())
        u = rng.random((n_visits, 6))
        flags = np.zeros((n_visits, _N_SLOTS), dtype=bool)
        flags[:, _IMP] = flags[:, _REWARD] = u[:, 0] < c.impression_rate  # reward slot: maybe dropped
        flags[:, _VIEW] = True
        flags[:, _CLICK] = u[:, 1] < mix.click_rate
        flags[:, _CART] = flags[:, _CLICK] & (u[:, 2] < mix.cart_rate)
        flags[:, _PURCHASE] = flags[:, _CART] & (u[:, 3] < mix.purchase_rate)
        flags[:, _RATING] = u[:, 4] < mix.rating_rate
        rows = np.flatnonzero(flags.ravel())
        row_visit, row_kind = np.divmod(rows, _N_SLOTS)
        visit_session = np.repeat(np.arange(n_sessions), visits)
        row_session = visit_session[row_visit]
        gaps = 1 + np.minimum(rng.exponential(c.mean_inter_event_ms, len(rows)).astype(np.int64), max_interval)
        elapsed = np.cumsum(gaps)
        first = np.searchsorted(row_session, np.arange(n_sessions))
        last = np.append(first[1:], len(rows)) - 1
        offset = elapsed - elapsed[first][row_session]  # ms since the session's first event
        durations = (elapsed[last] - elapsed[first]).tolist()
        interarrival = (1 + rng.exponential(c.mean_session_interarrival_ms, n_sessions)).astype(np.int64)
        candidates = w.user_of_rank[_draw(w.user_cdf, rng, (n_sessions, _USER_CANDIDATES))].tolist()
        devices = rng.choice(len(DEVICES), n_sessions, p=_DEVICE_P)

        # --- who: the first candidate not inside a session; else the one free soonest ---
        starts = [0] * n_sessions
        session_user = [0] * n_sessions
        gap = c.session_gap_ms
        for s, step in enumerate(interarrival.tolist()):
            clock += step
            cands = candidates[s]
            for user in cands:
                if free_at[user] <= clock:
                    break
            else:
                user = min(cands, key=free_at.__getitem__)
                clock = free_at[user]
            starts[s] = clock
            session_user[s] = user
            free_at[user] = clock + durations[s] + gap + 1

        users_np = np.asarray(session_user)[visit_session]
        segments = w.user_segment[users_np]
        items = w.item_of_rank[_draw(w.item_cdf, rng, n_visits)]
        arm_idx = (u[:, 5, None] >= w.arm_cdf[segments]).sum(axis=1)
        clicked = rng.random(n_visits) < w.ctr[segments, arm_idx]
        values = np.full(n_visits, np.nan)
        rated = flags[:, _RATING]
        values[rated] = w.affinity.ratings(users_np[rated], items[rated], rng)

        keep = np.flatnonzero((row_kind != _REWARD) | clicked[row_visit])
        times_np = np.asarray(starts)[row_session[keep]] + offset[keep]
        order = keep[np.argsort(times_np, kind="stable")]
        row_visit, row_kind = row_visit[order], row_kind[order]
        times = np.sort(times_np, kind="stable").tolist()
        is_arm = row_kind <= _REWARD
        row_item = np.where(is_arm, w.arms[arm_idx[row_visit]], items[row_visit]).tolist()
        row_prop = np.where(is_arm, w.arm_probs[segments[row_visit], arm_idx[row_visit]], 0.0).tolist()
        row_value = values[row_visit].tolist()
        row_user = users_np[row_visit].tolist()
        row_device = devices[visit_session[row_visit]].tolist()
        row_global_visit = (row_visit + visit_base).tolist()
        visit_base += n_visits

        # --- build events (the only per-event Python work) ---
        batch: list[Event] = []
        append = batch.append
        for t, user, item, kind, gv, prop, value, dev in zip(
            times,
            row_user,
            row_item,
            row_kind.tolist(),
            row_global_visit,
            row_prop,
            row_value,
            row_device,
            strict=True,
        ):
            ctx = {
                "segment": segment_names[user_segment[user]],
                "category": category_names[item_category[item]],
                "device": DEVICES[dev],
            }
            uid, iid, eid = user_names[user], item_names[item], f"{id_prefix}{next_id}"
            next_id += 1
            if kind == _VIEW:
                append(Event(eid, view_t, uid, t, iid, None, ctx))
            elif kind == _CLICK:
                append(Event(eid, click_t, uid, t, iid, None, ctx))
            elif kind == _IMP:
                decision = Decision(f"{request_prefix}{gv}", LOGGING_POLICY, iid, prop)
                append(Event(eid, imp_t, uid, t, iid, None, ctx, decision))
            elif kind == _REWARD:
                ctx["request_id"] = f"{request_prefix}{gv}"
                append(Event(eid, click_t, uid, t, iid, 1.0, ctx))
            elif kind == _CART:
                append(Event(eid, cart_t, uid, t, iid, None, ctx))
            elif kind == _PURCHASE:
                append(Event(eid, purchase_t, uid, t, iid, None, ctx))
            else:
                append(Event(eid, rating_t, uid, t, iid, value, ctx))

        # Later sessions start after `clock`, so everything up to it is final; the rest waits.
        pending.extend(batch)
        pending.sort(key=_time_of)  # two sorted runs: merged in linear time
        cut = bisect_right(pending, clock, key=_time_of)
        ready, pending = pending[:cut], pending[cut:]
        if limit is not None and emitted + len(ready) > limit:
            ready = ready[: limit - emitted]
        emitted += len(ready)
        yield from ready


def synthetic_ratings(
    n: int,
    n_users: int,
    n_items: int,
    seed: int = 7,
    *,
    rank: int = 4,
    noise: float = 0.4,
    zipf_exponent: float = 0.8,
    start_time_ms: int = DEFAULT_START_MS,
    interval_ms: int = 1_000,
) -> Iterator[Event]:
    """Yield ``n`` rating events only, from the same :class:`Affinity` as the full stream.

    Users are uniform, items Zipf-popular; values are whole stars 1..5; event times are whole
    seconds ``interval_ms`` apart (so a MovieLens round trip keeps them).

    >>> rs = list(synthetic_ratings(100, n_users=10, n_items=20, seed=1))
    >>> len(rs), {e.type.value for e in rs}, min(e.value for e in rs) >= 1, max(e.value for e in rs) <= 5
    (100, {'rating'}, True, True)
    """
    if n < 0 or n_users < 1 or n_items < 1 or interval_ms < 0:
        raise ValueError("need n >= 0, n_users >= 1, n_items >= 1 and interval_ms >= 0")
    affinity = Affinity(seed, n_users, n_items, rank, noise)
    rng = _rng(seed, 3)
    items_of_rank = _rng(seed, 0).permutation(n_items)
    users = rng.integers(0, n_users, n)
    items = items_of_rank[_draw(_zipf_cdf(n_items, zipf_exponent), rng, n)]
    values = affinity.ratings(users, items, rng).tolist()
    start_s = start_time_ms // 1000
    step_s = max(1, interval_ms // 1000) if interval_ms else 0
    rating = EventType.RATING
    return (
        Event(f"synr{seed}-{i}", rating, f"u{user}", (start_s + i * step_s) * 1000, f"i{item}", value)
        for i, (user, item, value) in enumerate(zip(users.tolist(), items.tolist(), values, strict=True))
    )


def write_movielens(path: str | Path, events: Iterable[Event]) -> int:
    r"""Write the rating events in MovieLens ``u.data`` format; return how many were written.

    Lines are ``user<TAB>item<TAB>rating<TAB>unix_seconds``; other event types are skipped and
    ids are written as they are (they must not contain whitespace).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "u.data")
    >>> write_movielens(path, synthetic_ratings(3, 5, 5, seed=1))
    3
    >>> open(path).read().splitlines()[0].count("\t")
    3
    """
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for e in events:
            if e.type is not EventType.RATING:
                continue
            item = e.item_id or ""
            if e.value is None or not item or any(ch.isspace() for ch in e.user_id + item):
                raise ValueError(f"event {e.event_id} cannot be written as a MovieLens line: {e}")
            out.write(f"{e.user_id}\t{item}\t{e.value:g}\t{e.event_time_ms // 1000}\n")
            written += 1
    return written
