"""What the job's operators send each other (pickled between Python operators).

Each is a small frozen dataclass; ``event_time_ms`` is the event time that produced it, which
the Redis sink uses to refuse writes that would move a key backwards in event time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RedisWrite:
    """Set ``key`` to ``payload`` (an envelope carries event time, write time, model version)."""

    key: str
    event_time_ms: int
    payload: Any
    route: str  # what picks the sink shard: the user id for user keys, else the key


@dataclass(frozen=True, slots=True)
class EraseUser:
    """Delete every Redis key of ``user_id`` (an erase event was processed)."""

    user_id: str
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class ItemDelta:
    """An update the user side made to an item's parameters, for the item's owner to apply."""

    item_id: str
    d_bias: float
    d_factors: bytes  # float64 little-endian
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class BanditFeedback:
    """An impression resolved: ``reward`` 1 (its click came) or 0 (it expired)."""

    scope_key: str
    arm: str
    reward: float
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class PopularityHit:
    """An interaction with ``item_id`` in ``segment``, weighted by event type."""

    segment: str
    item_id: str
    weight: float
    event_time_ms: int


@dataclass(frozen=True, slots=True)
class ModelProgress:
    """Prequential error and join counters since the previous report, from one user-side subtask."""

    learned: int
    squared_error: float
    absolute_error: float
    rewards_matched: int
    rewards_unmatched: int
    late_events: int
    event_time_ms: int
