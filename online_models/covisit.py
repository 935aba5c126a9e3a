"""Co-visitation: how often two items were visited in the same session, close in time ("also viewed").

Each visit of a session pairs its item with every other item the session visited within
``window_ms`` of it (the session's last ``max_recent`` distinct items are kept). A pair counts once
per session (repeat clicks of the same two items do not inflate it), both ways, with the highest
``weight`` of the visits that formed it (a click then a cart of the pair: the cart's).
:meth:`CoVisitation.similar` ranks an item's partners by that count: the lists shops show as
"customers who viewed this also viewed" (Amazon's item-to-item co-occurrence; the OTTO Kaggle
competition's "co-visitation matrices", whose weights ``clicks 1, carts 6, orders 3``
``bench/covisit_otto.py`` uses). :meth:`end_session` forgets a
closed session's recent items; the counts stay.

>>> covisit = CoVisitation(window_ms=60_000)
>>> for t, item in [(0, "boots"), (10_000, "socks"), (20_000, "boots"), (30_000, "laces")]:
...     covisit.learn_one("s1", item, t)
>>> covisit.learn_one("s2", "boots", 0)
>>> covisit.learn_one("s2", "laces", 5_000, weight=6.0)
>>> covisit.similar("boots", 5)
[('laces', 7.0), ('socks', 1.0)]
>>> covisit.learn_one("s2", "hat", 500_000)  # outside the window: no pair
>>> covisit.similar("hat", 5), covisit.n_pairs
([], 3)
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from typing import Any, Self

from online_models.base import ContractCase, ItemId, Learner, StateHeader
from schemas.events import Event, EventType

__all__ = ["OTTO_WEIGHTS", "VISIT_WEIGHTS", "CoVisitation"]

_HEADER = StateHeader(b"COVI")
#: Weights of the OTTO competition's "carts-orders" co-visitation matrix, by OTTO event type.
OTTO_WEIGHTS = {"clicks": 1.0, "carts": 6.0, "orders": 3.0}
#: The weight of a visit by Pulse event type, OTTO's for its types (impressions, ratings, blocks are no visits).
VISIT_WEIGHTS = {EventType.VIEW: 1.0, EventType.CLICK: 1.0, EventType.ADD_TO_CART: 6.0, EventType.PURCHASE: 3.0}

SessionId = str


class CoVisitation(Learner):
    """Weighted counts of item pairs visited in the same session within ``window_ms`` of each other.

    ``window_ms``: how far apart in event time two visits may be to pair (either order: a late
    visit pairs with later ones too). ``max_recent``: distinct items kept per open session (the
    oldest visit is forgotten first). ``gap_half_life_ms`` (0: off) halves a pair's weight per that
    much time between its two visits, so items visited one right after the other rank first.

    >>> close = CoVisitation(gap_half_life_ms=60_000)
    >>> for t, item in [(0, "a"), (60_000, "b"), (120_000, "c")]:
    ...     close.learn_one("s", item, t)
    >>> close.similar("a", 2)
    [('b', 0.5), ('c', 0.25)]
    """

    def __init__(self, window_ms: int = 24 * 3_600_000, max_recent: int = 30, gap_half_life_ms: int = 0) -> None:
        if window_ms < 0 or max_recent < 1 or gap_half_life_ms < 0:
            raise ValueError("need window_ms >= 0, max_recent >= 1 and gap_half_life_ms >= 0")
        self.window_ms = window_ms
        self.max_recent = max_recent
        self.gap_half_life_ms = gap_half_life_ms
        self._counts: dict[ItemId, dict[ItemId, float]] = {}
        # Per open session: item -> time of its latest visit (oldest first), and each pair's weight counted.
        self._recent: dict[SessionId, dict[ItemId, int]] = {}
        self._paired: dict[SessionId, dict[tuple[ItemId, ItemId], float]] = {}

    @property
    def n_pairs(self) -> int:
        """Distinct item pairs counted so far."""
        return sum(len(partners) for partners in self._counts.values()) // 2

    def learn_one(self, session: SessionId, item: ItemId, t_ms: int, weight: float = 1.0) -> None:
        """Count ``item``'s pairs with the session's recent items within the window; remember the visit."""
        recent = self._recent.setdefault(session, {})
        paired = self._paired.setdefault(session, {})
        for other, other_ms in recent.items():
            if other == item or abs(t_ms - other_ms) > self.window_ms:
                continue
            pair = (item, other) if item < other else (other, item)
            worth = weight * self._closeness(abs(t_ms - other_ms))
            added = worth - paired.get(pair, 0.0)
            if added <= 0:
                continue
            paired[pair] = worth
            for a, b in ((item, other), (other, item)):
                partners = self._counts.setdefault(a, {})
                partners[b] = partners.get(b, 0.0) + added
        latest = recent.pop(item, t_ms)  # re-inserted last: the dict stays in visit order
        recent[item] = max(t_ms, latest)
        if len(recent) > self.max_recent:
            del recent[next(iter(recent))]

    def _closeness(self, gap_ms: int) -> float:
        return 0.5 ** (gap_ms / self.gap_half_life_ms) if self.gap_half_life_ms else 1.0

    def items(self) -> list[ItemId]:
        """Every item with at least one co-visited partner, in the order first seen."""
        return list(self._counts)

    def end_session(self, session: SessionId) -> None:
        """Forget a closed session's recent items and pairs (its counts stay)."""
        self._recent.pop(session, None)
        self._paired.pop(session, None)

    def similar(
        self, item: ItemId, k: int, allows: Callable[[ItemId], bool] | None = None
    ) -> list[tuple[ItemId, float]]:
        """The ``k`` items most co-visited with ``item`` (that ``allows`` accepts), highest count first, ties by id.

        >>> covisit = CoVisitation()
        >>> for item in "abc":
        ...     covisit.learn_one("s", item, 0)
        >>> covisit.similar("a", 5), covisit.similar("a", 5, allows=lambda other: other != "b")
        ([('b', 1.0), ('c', 1.0)], [('c', 1.0)])
        """
        partners = self._counts.get(item, {})
        pairs = partners.items() if allows is None else ((o, n) for o, n in partners.items() if allows(o))
        return heapq.nsmallest(k, pairs, key=lambda pair: (-pair[1], pair[0])) if k > 0 else []

    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters."""
        return type(self)(self.window_ms, self.max_recent, self.gap_half_life_ms)

    def to_bytes(self) -> bytes:
        """Header, then hyperparameters, counts and open sessions as JSON (insertion order kept)."""
        state: dict[str, Any] = {
            "window_ms": self.window_ms, "max_recent": self.max_recent, "gap_half_life_ms": self.gap_half_life_ms,
            "counts": self._counts,
            "recent": self._recent,
            "paired": {s: [[a, b, w] for (a, b), w in pairs.items()] for s, pairs in self._paired.items()},
        }
        return _HEADER.pack(self.STATE_VERSION) + json.dumps(state, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        _, offset = _HEADER.unpack(data, supported=(1,))
        state = json.loads(data[offset:])
        learner = cls(int(state["window_ms"]), int(state["max_recent"]), int(state["gap_half_life_ms"]))
        learner._counts = {item: {o: float(n) for o, n in partners.items()}
                           for item, partners in state["counts"].items()}
        learner._recent = {s: {item: int(t) for item, t in items.items()} for s, items in state["recent"].items()}
        learner._paired = {s: {(a, b): float(w) for a, b, w in pairs} for s, pairs in state["paired"].items()}
        return learner

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        from online_models._streams import mixed_events

        def observe(learner: Learner, event: Event) -> list[tuple[str, float]]:
            assert isinstance(learner, CoVisitation)
            if event.type is EventType.ERASE:
                learner.end_session(event.user_id)
            weight = VISIT_WEIGHTS.get(event.type)
            if event.item_id is None or weight is None:
                return []
            learner.learn_one(event.user_id, event.item_id, event.event_time_ms, weight)
            return learner.similar(event.item_id, 3)

        return ContractCase(cls(window_ms=3_600_000, max_recent=4), mixed_events(seed), observe)
