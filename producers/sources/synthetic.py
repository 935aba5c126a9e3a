"""A seeded synthetic interaction stream with known ground truth.

The generator draws everything in numpy batches and only builds :class:`Event` objects in
the Python loop, so it costs a few µs per event. What it simulates:

* items with Zipf popularity and a category each; users with Zipf-ish activity and a segment;
* optionally (``taste`` > 0) planted tastes: each user has a taste category, that share of
  their visits goes to its items (:meth:`World.with_tastes`) and they rate them a star higher:
  the structure a catalogue's categories (:mod:`producers.catalogue`) reflect;
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
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from producers.sources.blocks import with_blocks
from producers.sources.movielens import write_movielens
from producers.sources.synthetic_config import DEFAULT_START_MS, EventMix, SyntheticConfig
from producers.sources.synthetic_world import Affinity, Array, World, draw, random_stream, zipf_cdf
from schemas.events import Decision, Event, EventType

# The config, the affinity and the MovieLens writer live in synthetic_config.py,
# synthetic_world.py and movielens.py; they are re-exported here, where callers import them from.
__all__ = [
    "DEFAULT_START_MS",
    "DEVICES",
    "LOGGING_POLICY",
    "Affinity",
    "EventMix",
    "SyntheticConfig",
    "synthetic_events",
    "synthetic_ratings",
    "write_movielens",
]

LOGGING_POLICY = "synthetic-logging"
DEVICES = ("mobile", "desktop", "app")
_DEVICE_P = (0.55, 0.3, 0.15)

# Slots of one item visit, in the order they happen. _REWARD is the click answering _IMP.
_IMP, _REWARD, _VIEW, _CLICK, _CART, _PURCHASE, _RATING = range(7)
_N_SLOTS = 7
_USER_CANDIDATES = 4


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
    if not config.block_share:
        return _generate(config, limit)
    events = with_blocks(_generate(config, None), config.block_share, config.seed)  # blocks count in limit
    return events if limit is None else itertools.islice(events, limit)


class _Labels(NamedTuple):
    """What the per-event loop looks up by index: names, each user's segment, each item's category."""

    user_names: list[str]
    item_names: list[str]
    segment_names: list[str]
    category_names: list[str]
    user_segment: list[int]
    item_category: list[int]
    id_prefix: str
    request_prefix: str

    @classmethod
    def of(cls, w: World) -> _Labels:
        """The labels of ``w`` as plain Python lists."""
        return cls(
            w.user_names,
            w.item_names,
            w.segment_names,
            w.category_names,
            w.user_segment.tolist(),
            w.item_category.tolist(),
            f"{w.prefix}-",
            f"{w.prefix}-q",
        )


class _Plan(NamedTuple):
    """The shape of one batch of sessions, before anyone is assigned to them.

    A visit is one item visit (up to ``_N_SLOTS`` events); a row is a slot of a visit that happens.
    """

    n_visits: int
    #: Per visit: uniforms deciding impression, click, cart, purchase, rating and the arm shown.
    uniforms: Array
    #: Per visit and slot: whether the slot happens (a reward slot may still be dropped).
    flags: Array
    row_visit: Array
    row_kind: Array
    visit_session: Array
    row_session: Array
    #: Per row: ms since its session's first event.
    offset: Array
    #: Per session: ms from its first to its last event.
    durations: list[int]
    #: Per session: ms since the previous session started.
    interarrival: Array
    #: Per session: the users who may have it, most likely first.
    candidates: list[list[int]]
    devices: Array


class _Rows(NamedTuple):
    """The events of one batch in time order, one plain list per field."""

    times: list[int]
    users: list[int]
    items: list[int]
    kinds: list[int]
    #: Number of the visit in the whole stream (names the request an impression answers).
    visits: list[int]
    propensities: list[float]
    values: list[float]
    devices: list[int]


def _generate(c: SyntheticConfig, limit: int | None) -> Iterator[Event]:
    w = World(c)
    rng = random_stream(c.seed, 2)
    taste_rng = random_stream(c.seed, 5)
    mean_visits = max(1.0, c.mean_events_per_session / _events_per_visit(c))
    n_sessions = max(16, int(4096 / c.mean_events_per_session))
    max_interval = max(1, c.session_gap_ms // 4)
    free_at = [c.start_time_ms] * c.n_users  # a user may start a session at or after this time
    clock = c.start_time_ms
    emitted = 0
    next_id = 0
    visit_base = 0
    pending: list[Event] = []
    labels = _Labels.of(w)

    while limit is None or emitted < limit:
        plan = _plan_sessions(c, w, rng, n_sessions, mean_visits, max_interval)
        clock, starts, session_user = _assign_users(plan, free_at, clock, c.session_gap_ms)
        rows = _visit_rows(w, (rng, taste_rng), plan, starts, session_user, visit_base)
        visit_base += plan.n_visits
        batch = _build_events(rows, labels, next_id)
        next_id += len(batch)
        ready, pending = _release(pending, batch, clock)
        if limit is not None and emitted + len(ready) > limit:
            ready = ready[: limit - emitted]
        emitted += len(ready)
        yield from ready


def _plan_sessions(
    c: SyntheticConfig,
    w: World,
    rng: np.random.Generator,
    n_sessions: int,
    mean_visits: float,
    max_interval: int,
) -> _Plan:
    """Structure of ``n_sessions`` sessions, independent of who the users are."""
    mix = c.mix
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
    candidates = w.user_of_rank[draw(w.user_cdf, rng, (n_sessions, _USER_CANDIDATES))].tolist()
    devices = rng.choice(len(DEVICES), n_sessions, p=_DEVICE_P)
    return _Plan(
        n_visits, u, flags, row_visit, row_kind, visit_session, row_session, offset,
        durations, interarrival, candidates, devices,
    )  # fmt: skip


def _assign_users(plan: _Plan, free_at: list[int], clock: int, gap: int) -> tuple[int, list[int], list[int]]:
    """Who: the first candidate not inside a session; else the one free soonest.

    Moves ``clock`` to each session's start and marks its user busy in ``free_at`` (until
    ``gap`` after the session ends); returns the clock, the start and the user of each session.
    """
    n_sessions = len(plan.candidates)
    starts = [0] * n_sessions
    session_user = [0] * n_sessions
    candidates, durations = plan.candidates, plan.durations
    for s, step in enumerate(plan.interarrival.tolist()):
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
    return clock, starts, session_user


def _visit_rows(
    w: World,
    rngs: tuple[np.random.Generator, np.random.Generator],
    plan: _Plan,
    starts: list[int],
    session_user: list[int],
    visit_base: int,
) -> _Rows:
    """What: each visit's item, arm shown, reward click and rating; then the rows in time order.

    ``rngs`` are the stream's generator and the one of planted tastes (used only when ``taste`` > 0).
    """
    rng, taste_rng = rngs
    n_visits, row_visit, row_kind = plan.n_visits, plan.row_visit, plan.row_kind
    users_np = np.asarray(session_user)[plan.visit_session]
    segments = w.user_segment[users_np]
    items = w.with_tastes(users_np, w.item_of_rank[draw(w.item_cdf, rng, n_visits)], taste_rng)
    arm_idx = (plan.uniforms[:, 5, None] >= w.arm_cdf[segments]).sum(axis=1)
    clicked = rng.random(n_visits) < w.ctr[segments, arm_idx]
    values = np.full(n_visits, np.nan)
    rated = plan.flags[:, _RATING]
    values[rated] = w.ratings(users_np[rated], items[rated], rng)

    keep = np.flatnonzero((row_kind != _REWARD) | clicked[row_visit])
    times_np = np.asarray(starts)[plan.row_session[keep]] + plan.offset[keep]
    order = keep[np.argsort(times_np, kind="stable")]
    row_visit, row_kind = row_visit[order], row_kind[order]
    is_arm = row_kind <= _REWARD
    return _Rows(
        times=np.sort(times_np, kind="stable").tolist(),
        users=users_np[row_visit].tolist(),
        items=np.where(is_arm, w.arms[arm_idx[row_visit]], items[row_visit]).tolist(),
        kinds=row_kind.tolist(),
        visits=(row_visit + visit_base).tolist(),
        propensities=np.where(is_arm, w.arm_probs[segments[row_visit], arm_idx[row_visit]], 0.0).tolist(),
        values=values[row_visit].tolist(),
        devices=plan.devices[plan.visit_session[row_visit]].tolist(),
    )


def _build_events(rows: _Rows, labels: _Labels, next_id: int) -> list[Event]:
    """Build the events of ``rows``, ids counting from ``next_id`` (the only per-event Python work)."""
    user_names, item_names = labels.user_names, labels.item_names
    segment_names, category_names = labels.segment_names, labels.category_names
    user_segment, item_category = labels.user_segment, labels.item_category
    id_prefix, request_prefix = labels.id_prefix, labels.request_prefix
    view_t, click_t, cart_t = EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART
    purchase_t, rating_t, imp_t = EventType.PURCHASE, EventType.RATING, EventType.IMPRESSION
    batch: list[Event] = []
    append = batch.append
    for t, user, item, kind, gv, prop, value, dev in zip(
        rows.times,
        rows.users,
        rows.items,
        rows.kinds,
        rows.visits,
        rows.propensities,
        rows.values,
        rows.devices,
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
    return batch


def _release(pending: list[Event], batch: list[Event], clock: int) -> tuple[list[Event], list[Event]]:
    """Split ``pending + batch`` into the events final up to ``clock`` (in time order) and the rest.

    Later sessions start after ``clock``, so everything up to it is final; the rest waits.
    """
    pending.extend(batch)
    pending.sort(key=_time_of)  # two sorted runs: merged in linear time
    cut = bisect_right(pending, clock, key=_time_of)
    return pending[:cut], pending[cut:]


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
    rng = random_stream(seed, 3)
    items_of_rank = random_stream(seed, 0).permutation(n_items)
    users = rng.integers(0, n_users, n)
    items = items_of_rank[draw(zipf_cdf(n_items, zipf_exponent), rng, n)]
    values = affinity.ratings(users, items, rng).tolist()
    start_s = start_time_ms // 1000
    step_s = max(1, interval_ms // 1000) if interval_ms else 0
    rating = EventType.RATING
    return (
        Event(f"synr{seed}-{i}", rating, f"u{user}", (start_s + i * step_s) * 1000, f"i{item}", value)
        for i, (user, item, value) in enumerate(zip(users.tolist(), items.tolist(), values, strict=True))
    )
