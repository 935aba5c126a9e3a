"""The knobs of the synthetic stream: :class:`SyntheticConfig` and its :class:`EventMix`.

The generator is :mod:`producers.sources.synthetic`, the hidden users, items and affinity it
draws from are :mod:`producers.sources.synthetic_world`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

__all__ = ["DEFAULT_START_MS", "EventMix", "SyntheticConfig"]

#: 2024-01-01T00:00:00Z, the default start of synthetic time.
DEFAULT_START_MS = 1_704_067_200_000


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
    #: Planted structure (0 = none): each user has a taste category and this share of their
    #: visits goes to items of it (Zipf-popular within the category), the rest by popularity.
    taste: float = 0.0
    #: Rank of the hidden user x item affinity behind ratings.
    rank: int = 4
    rating_noise: float = 0.4
    start_time_ms: int = DEFAULT_START_MS
    #: Mean time between consecutive events of one session.
    mean_inter_event_ms: int = 15_000
    #: Mean time between the starts of two sessions (of any users).
    mean_session_interarrival_ms: int = 1_000
    #: Share of the stream that is block events (event schema version 2; 0 = none, as before v2):
    #: a user blocks an item just shown or its category (:mod:`producers.sources.blocks`).
    block_share: float = 0.0

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
        for name in ("impression_rate", "mean_ctr", "taste"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.block_share <= 0.5:
            raise ValueError(f"block_share must be in [0, 0.5], got {self.block_share}")
        if self.zipf_exponent < 0 or self.user_zipf_exponent < 0 or self.rating_noise < 0:
            raise ValueError("zipf exponents and rating_noise must be >= 0")
