"""A seeded click stream with planted low-rank taste, for judging rankers (no I/O, no clock).

Pulse's full synthetic stream (``producers.sources.synthetic``) draws *which* items a user
visits from item popularity alone (its planted low-rank structure is in rating values), so no
personal ranker can beat popularity on it. Here users choose what they click: user ``u`` clicks
item ``i`` with probability proportional to ``popularity_i * exp(taste * <p_u, q_i>)``, so a
learner that finds ``p`` and ``q`` ranks better than popularity. Each click comes after an
impression of the clicked item and ``impressions`` impressions of popular items the user did
not click (the negatives an impression-aware learner can use); some clicks are followed by an
add-to-cart. ``swap_at`` plants a change: from that click on, users get other users' tastes.

>>> events = planted_stream(PlantedConfig(n_users=20, n_items=30, n_clicks=50, seed=1))
>>> sorted({e.type.value for e in events})
['add_to_cart', 'click', 'impression']
>>> sum(e.type.value == "click" for e in events)
50
>>> events == planted_stream(PlantedConfig(n_users=20, n_items=30, n_clicks=50, seed=1))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from schemas.events import Decision, Event, EventType

__all__ = ["PlantedConfig", "planted_stream"]

_START_MS = 1_704_067_200_000


@dataclass(frozen=True)
class PlantedConfig:
    """Knobs of :func:`planted_stream`; the same config always gives the same stream."""

    n_users: int = 1_000
    n_items: int = 1_000
    n_clicks: int = 50_000
    rank: int = 4
    #: How strongly taste (vs popularity) decides a click: 0 = popularity only.
    taste: float = 2.0
    zipf_exponent: float = 0.8
    clicks_per_session: float = 5.0
    impressions: int = 2
    cart_rate: float = 0.15
    #: Index of the click from which users swap tastes (None: tastes never change).
    swap_at: int | None = None
    seed: int = 0


def _choice_cdfs(c: PlantedConfig, users: NDArray[np.float64], items: NDArray[np.float64]) -> NDArray[np.float64]:
    log_pop = -c.zipf_exponent * np.log(np.arange(1, c.n_items + 1))
    logits = c.taste * (users @ items.T) + log_pop
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdfs: NDArray[np.float64] = np.cumsum(weights, axis=1)
    cdfs /= cdfs[:, -1:]
    return cdfs


def _draw_rows(cdfs: NDArray[np.float64], users: NDArray[np.intp], uniforms: NDArray[np.float64]) -> list[int]:
    last = cdfs.shape[1] - 1
    return [min(int(np.searchsorted(cdfs[u], x, side="right")), last) for u, x in zip(users, uniforms, strict=True)]


def planted_stream(c: PlantedConfig) -> list[Event]:
    """The stream of ``c``: impressions, clicks and carts in event-time order."""
    rng = np.random.default_rng([c.seed, 17])
    scale = c.rank**-0.25  # <p_u, q_i> has unit variance
    user_factors = rng.normal(0.0, scale, (c.n_users, c.rank))
    item_factors = rng.normal(0.0, scale, (c.n_items, c.rank))
    cdfs = _choice_cdfs(c, user_factors, item_factors)
    swap = rng.permutation(c.n_users)
    n_sessions = max(1, int(c.n_clicks / c.clicks_per_session))
    session_of_click = np.sort(rng.integers(0, n_sessions, c.n_clicks))
    session_user = rng.integers(0, c.n_users, n_sessions)
    users = session_user[session_of_click]
    taste_users = users.copy()
    if c.swap_at is not None:
        taste_users[c.swap_at :] = swap[users[c.swap_at :]]
    items = _draw_rows(cdfs, taste_users, rng.random(c.n_clicks))
    popular = np.cumsum(np.arange(1, c.n_items + 1, dtype=np.float64) ** -c.zipf_exponent)
    shown = np.minimum(np.searchsorted(popular / popular[-1], rng.random((c.n_clicks, c.impressions))), c.n_items - 1)
    carts = rng.random(c.n_clicks) < c.cart_rate
    # Sessions start 2 hours apart on average (longer than any session gap), clicks 20 s apart.
    session_start = _START_MS + np.cumsum(rng.integers(1, 14_400_000, n_sessions))
    position = np.arange(c.n_clicks) - np.searchsorted(session_of_click, session_of_click)
    times = (session_start[session_of_click] + 20_000 * position).tolist()
    events: list[Event] = []
    for k in range(c.n_clicks):
        user, item, t = f"u{users[k]}", f"i{items[k]}", times[k]
        for j, other in enumerate(shown[k].tolist()):
            if other != items[k]:
                events.append(_impression(f"p{k}-n{j}", user, t, f"i{other}"))
        events.append(_impression(f"p{k}-imp", user, t, item))
        events.append(Event(f"p{k}-click", EventType.CLICK, user, t + 1, item))
        if carts[k]:
            events.append(Event(f"p{k}-cart", EventType.ADD_TO_CART, user, t + 2, item))
    events.sort(key=lambda e: e.event_time_ms)
    return events


def _impression(event_id: str, user: str, t: int, item: str) -> Event:
    """An impression as the job accepts it: with the decision that showed the item (one request each)."""
    return Event(event_id, EventType.IMPRESSION, user, t, item, decision=Decision(event_id, "planted", item, 1.0))
