"""Small seeded event streams the learners' contract cases share (no I/O, no clock).

>>> events = mixed_events(seed=1, n=5)
>>> len(events), events == mixed_events(seed=1, n=5)
(5, True)
"""

from __future__ import annotations

import random

from schemas.events import Event, EventType

__all__ = ["mixed_events"]

_TYPES = (
    EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE,
    EventType.RATING, EventType.RATING, EventType.IMPRESSION,
)  # fmt: skip


def mixed_events(seed: int, n: int = 60, n_users: int = 4, n_items: int = 6) -> list[Event]:
    """``n`` events of every type (one erase), a few users and items, times mostly increasing."""
    rng = random.Random(seed)
    events, time_ms = [], 1_700_000_000_000
    for k in range(n):
        time_ms += rng.choice((1_000, 30_000, 600_000, -20_000, 3_600_000))
        kind = EventType.ERASE if k == n // 2 else rng.choice(_TYPES)
        item = None if kind is EventType.ERASE else f"i{rng.randrange(n_items)}"
        events.append(
            Event(
                event_id=f"e{k}",
                type=kind,
                user_id=f"u{rng.randrange(n_users)}",
                event_time_ms=time_ms,
                item_id=item,
                value=float(rng.randint(1, 5)) if kind is EventType.RATING else None,
                context={"category": f"c{rng.randrange(3)}", "segment": f"s{rng.randrange(2)}"},
            )
        )
    return events
