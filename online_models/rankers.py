"""The models :func:`online_models.ranking.evaluate_ranking` compares, behind one small protocol.

* :class:`PopularityRanker` -- decayed popularity, the decay of :mod:`online_models.popularity`
  (forward decay in a landmark's frame) held as one array so scoring costs no Python loop;
* :class:`CooccurrenceRanker` -- session co-occurrence: items counted together in a session
  score for a user by the items of the user's open session (popularity breaks ties);
* :class:`FactorRanker` -- any learner with ``item_index``, ``item_keys``, ``scores_all`` and
  ``learn_event`` (:class:`~online_models.mf.OwnerSplitMF`, :class:`~online_models.implicit.ImplicitMF`).

>>> from schemas.events import Event, EventType
>>> co = CooccurrenceRanker()
>>> for n, (user, item) in enumerate([("a", "x"), ("a", "y"), ("b", "z"), ("b", "z2")]):
...     _ = co.learn_event(Event(f"e{n}", EventType.CLICK, user, n, item_id=item))
>>> found = co.candidates("c", ["x"])
>>> max(found.keys, key=lambda i: found.scores[found.rows[i]])
'y'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from online_models.mf_params import Vector
from online_models.popularity import InteractionWeights, decay_factor, epoch_landmark, forward_weight
from online_models.ranking import Candidates
from online_models.session import DEFAULT_GAP_MS, DEFAULT_MAX_RECENT
from schemas.events import Event, ItemId, UserId

__all__ = ["CooccurrenceRanker", "FactorRanker", "PopularityRanker"]


class _Rows:
    """Items in order of first sight, with an array of one float per item that grows by doubling."""

    def __init__(self) -> None:
        self.rows: dict[ItemId, int] = {}
        self.keys: list[ItemId] = []
        self.values: Vector = np.zeros(64)

    def row(self, item: ItemId) -> int:
        row = self.rows.get(item)
        if row is None:
            row = self.rows[item] = len(self.keys)
            self.keys.append(item)
            if row == len(self.values):
                self.values = np.concatenate([self.values, np.zeros(row)])
        return row

    def view(self) -> Vector:
        return self.values[: len(self.keys)]


class PopularityRanker:
    """Decayed popularity of every item counted so far (impressions count nothing)."""

    def __init__(self, half_life_ms: int = 24 * 3600 * 1000, weights: InteractionWeights | None = None) -> None:
        self.half_life_ms = half_life_ms
        self.weights = weights or InteractionWeights()
        self._items = _Rows()
        self._landmark_ms: int | None = None

    def learn_event(self, event: Event) -> bool:
        """Count ``event``'s weight into its item's decayed count."""
        weight = self.weights.weight(event.type)
        if event.item_id is None or weight == 0.0:
            return False
        landmark = epoch_landmark(event.event_time_ms, self.half_life_ms)
        if self._landmark_ms is None:
            self._landmark_ms = landmark
        elif landmark > self._landmark_ms:  # a new epoch: move every count to its frame
            self._items.values *= decay_factor(self._landmark_ms, landmark, self.half_life_ms)
            self._landmark_ms = landmark
        row = self._items.row(event.item_id)
        self._items.values[row] += forward_weight(weight, event.event_time_ms, self._landmark_ms, self.half_life_ms)
        return True

    def candidates(self, user: UserId, session_items: Sequence[ItemId]) -> Candidates:
        """Every counted item; scores in the landmark's frame (the same order as decayed counts)."""
        return Candidates(self._items.rows, self._items.keys, self._items.view())


class CooccurrenceRanker:
    """Items scored by how often they shared a session with the items of the user's open session."""

    def __init__(self, gap_ms: int = DEFAULT_GAP_MS, max_recent: int = DEFAULT_MAX_RECENT) -> None:
        self.gap_ms, self.max_recent = gap_ms, max_recent
        self._items = _Rows()  # values: plain counts, for ties
        self._pairs: dict[int, dict[int, float]] = {}
        self._sessions: dict[UserId, tuple[int, list[int]]] = {}  # user -> (latest time, recent rows)

    def learn_event(self, event: Event) -> bool:
        """Count ``event``'s item with every item of the user's open session."""
        if event.item_id is None or InteractionWeights().weight(event.type) == 0.0:
            return False
        row, t = self._items.row(event.item_id), event.event_time_ms
        self._items.values[row] += 1.0
        latest, recent = self._sessions.get(event.user_id, (t, []))
        if t - latest >= self.gap_ms:
            recent = []
        for other in recent:
            if other != row:
                mine, theirs = self._pairs.setdefault(row, {}), self._pairs.setdefault(other, {})
                mine[other] = mine.get(other, 0.0) + 1.0
                theirs[row] = theirs.get(row, 0.0) + 1.0
        if row not in recent:
            recent = [*recent, row][-self.max_recent :]
        self._sessions[event.user_id] = (max(t, latest), recent)
        return True

    def candidates(self, user: UserId, session_items: Sequence[ItemId]) -> Candidates:
        """Co-occurrence counts with ``session_items``, plus popularity scaled below one count."""
        counts = self._items.view()
        scores = counts / (2.0 * (1.0 + counts.max())) if len(counts) else counts.copy()
        for item in session_items:
            pairs = self._pairs.get(self._items.rows.get(item, -1))
            if pairs:
                scores[np.fromiter(pairs.keys(), np.intp, len(pairs))] += np.fromiter(pairs.values(), float, len(pairs))
        return Candidates(self._items.rows, self._items.keys, scores)


class FactorModel(Protocol):
    """A factor learner that scores every item it knows at once."""

    @property
    def item_index(self) -> Mapping[ItemId, int]: ...

    @property
    def item_keys(self) -> Sequence[ItemId]: ...

    def scores_all(self, user: UserId) -> Vector: ...

    def learn_event(self, event: Event) -> bool: ...


class FactorRanker:
    """A factor learner as a ranker: its known items, scored for the user."""

    def __init__(self, model: FactorModel) -> None:
        self.model = model

    def learn_event(self, event: Event) -> bool:
        """The learner's own ``learn_event``."""
        return self.model.learn_event(event)

    def candidates(self, user: UserId, session_items: Sequence[ItemId]) -> Candidates:
        """Every item the learner knows, scored for ``user``."""
        return Candidates(self.model.item_index, self.model.item_keys, self.model.scores_all(user))
