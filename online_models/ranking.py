"""Prequential ranking evaluation: before learning each positive event, where its item ranks.

For every event in event-time order, each ranker is first asked for its scores of every item
it could recommend to the event's user; when the event is a positive (its type is in
``positives``), the true item's rank is taken among those items *with the user's seen items
excluded as the job excludes them* (the items of the user's open session,
:func:`online_models.session.step` with the job's gap and ``max_recent``; unlike the job's
session, impressions do not make an item seen here, since every click follows the impression of
its item and would otherwise never be judged). Then every ranker
learns the event. An item the ranker does not know ranks last (a miss); a positive whose item
is among the user's seen items is not judged (the job could never recommend it) and is counted
as a repeat.

Per ranker: HitRate@k (the item is in the top k), NDCG@k (``1 / log2(1 + rank)`` when in the
top k), recall@k (the share of the items the user goes on to act on in the rest of the session,
this one included, that are in the top k), coverage (the share of the stream's items that were
ever in a top k) and µs per event (scoring and learning, every event).

>>> from online_models.rankers import PopularityRanker
>>> from schemas.events import Event, EventType
>>> clicks = [Event(f"e{n}", EventType.CLICK, f"u{n}", n, item_id=item) for n, item in enumerate("aaba")]
>>> result = evaluate_ranking(clicks, {"pop": PopularityRanker()}, k=1)["pop"]
>>> result.n, result.hits, result.misses_unknown, result.repeats, result.coverage
(4, 2, 2, 0, 0.5)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from online_models import session as sessions
from online_models.mf_params import Vector, top_k_rows
from schemas.events import Event, EventType, ItemId, UserId

__all__ = [
    "DEFAULT_POSITIVES", "Candidates", "Ranker", "RankingResult", "evaluate_ranking", "rank_of", "session_futures",
]

#: Event types whose item is the one to rank (the positives), unless the caller says otherwise.
DEFAULT_POSITIVES = frozenset({EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE})
Clock = Callable[[], float]


class Candidates(NamedTuple):
    """Every item a ranker could recommend: row of each item, items in row order, a score per row."""

    rows: Mapping[ItemId, int]
    keys: Sequence[ItemId]
    scores: Vector


class Ranker(Protocol):
    """What the evaluation needs of a model: scores for all its items, then learning."""

    def candidates(self, user: UserId, session_items: Sequence[ItemId]) -> Candidates:
        """Scores of every item it could recommend to ``user`` (whose open session holds ``session_items``)."""

    def learn_event(self, event: Event) -> bool:
        """Learn ``event``; return whether it learned anything."""


@dataclass
class RankingResult:
    """Sums over the judged positives of one ranker, and its time."""

    k: int
    n: int = 0
    hits: int = 0
    ndcg_sum: float = 0.0
    recall_sum: float = 0.0
    misses_unknown: int = 0
    repeats: int = 0
    events: int = 0
    seconds: float = 0.0
    catalogue: int = 0
    covered: set[ItemId] = field(default_factory=set)

    @property
    def hit_rate(self) -> float:
        """Share of judged positives whose item was in the top k."""
        return self.hits / self.n if self.n else math.nan

    @property
    def ndcg(self) -> float:
        """Mean NDCG@k (one relevant item per judged positive)."""
        return self.ndcg_sum / self.n if self.n else math.nan

    @property
    def recall(self) -> float:
        """Mean share of the rest of the session's items in the top k."""
        return self.recall_sum / self.n if self.n else math.nan

    @property
    def coverage(self) -> float:
        """Share of the stream's items ever in a top k."""
        return len(self.covered) / self.catalogue if self.catalogue else math.nan

    @property
    def us_per_event(self) -> float:
        """Microseconds of scoring and learning per event of the stream."""
        return 1e6 * self.seconds / self.events if self.events else 0.0


def session_futures(
    events: Sequence[Event], positives: frozenset[EventType], gap_ms: int = sessions.DEFAULT_GAP_MS
) -> dict[int, frozenset[ItemId]]:
    """For each positive (by index): the items of its user's positives from it to the end of its session.

    >>> from schemas.events import Event, EventType
    >>> evs = [Event(f"e{n}", EventType.CLICK, "u", t, item_id=i) for n, (t, i) in enumerate(
    ...     [(0, "a"), (1, "b"), (2, "a"), (10**9, "c")])]
    >>> [sorted(f) for f in session_futures(evs, frozenset({EventType.CLICK})).values()]
    [['c'], ['a'], ['a', 'b'], ['a', 'b']]
    """
    futures: dict[int, frozenset[ItemId]] = {}
    ahead: dict[UserId, tuple[int, set[ItemId]]] = {}  # user -> (time of its next positive, items from there)
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if event.type not in positives or event.item_id is None:
            continue
        later = ahead.get(event.user_id)
        items = later[1] if later is not None and later[0] - event.event_time_ms < gap_ms else set()
        items.add(event.item_id)
        ahead[event.user_id] = (event.event_time_ms, items)
        futures[index] = frozenset(items)
    return futures


def rank_of(scores: Vector, row: int, skip_rows: Sequence[int] = ()) -> int:
    """The 1-based rank of ``row`` by score among all rows but ``skip_rows`` (ties: lower row first).

    The job's running HitRate (``flink_jobs/user_learning.py``) ranks with it too.

    >>> rank_of(np.array([0.5, 0.9, 0.5, 0.1]), 2), rank_of(np.array([0.5, 0.9, 0.5, 0.1]), 2, skip_rows=[1])
    (3, 2)
    """
    masked = scores
    if len(skip_rows):
        masked = scores.copy()
        masked[np.asarray(skip_rows, dtype=np.intp)] = -np.inf
    true_score = masked[row]
    return 1 + int(np.count_nonzero(masked > true_score)) + int(np.count_nonzero(masked[:row] == true_score))


def _judge(
    result: RankingResult, found: Candidates, item: ItemId, seen: Sequence[ItemId], future: frozenset[ItemId]
) -> None:
    scores = found.scores
    skip = [found.rows[i] for i in seen if i in found.rows]
    top = top_k_rows(scores, result.k, skip)
    top_items = {found.keys[r] for r in top.tolist()}
    result.covered |= top_items
    result.n += 1
    relevant = future.difference(seen)
    result.recall_sum += len(relevant & top_items) / len(relevant)
    row = found.rows.get(item)
    if row is None:
        result.misses_unknown += 1
        return
    rank = rank_of(scores, row, skip)
    if rank <= result.k:
        result.hits += 1
        result.ndcg_sum += 1.0 / math.log2(1 + rank)


def evaluate_ranking(
    events: Iterable[Event],
    rankers: Mapping[str, Ranker],
    *,
    k: int = 10,
    positives: frozenset[EventType] = DEFAULT_POSITIVES,
    gap_ms: int = sessions.DEFAULT_GAP_MS,
    max_recent: int = sessions.DEFAULT_MAX_RECENT,
    clock: Clock = time.perf_counter,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
) -> dict[str, RankingResult]:
    """Judge then teach every ranker on ``events`` (taken in the order given); one result per ranker."""
    stream = list(events)
    futures = session_futures(stream, positives, gap_ms)
    results = {name: RankingResult(k, catalogue=len({e.item_id for e in stream if e.item_id})) for name in rankers}
    open_sessions: dict[UserId, sessions.SessionState] = {}
    for index, event in enumerate(stream, start=1):
        if on_progress is not None and index % progress_every == 0:
            on_progress(progress_every)
        state = open_sessions.get(event.user_id)
        seen = [item for _, item in state.recent] if state is not None else []
        judged = event.type in positives and event.item_id is not None
        if judged and event.item_id in seen:
            judged = False
            for result in results.values():
                result.repeats += 1
        for name, ranker in rankers.items():
            result = results[name]
            start = clock()
            if judged:
                _judge(result, ranker.candidates(event.user_id, seen), event.item_id or "", seen, futures[index - 1])
            ranker.learn_event(event)
            result.seconds += clock() - start
            result.events += 1
        if event.type is EventType.IMPRESSION:  # shown is not seen: every click follows its impression
            continue
        new_state, _ = sessions.step(state, event, gap_ms=gap_ms, max_recent=max_recent)
        if new_state is None:
            open_sessions.pop(event.user_id, None)
        else:
            open_sessions[event.user_id] = new_state
    if on_progress is not None and len(stream) % progress_every:
        on_progress(len(stream) % progress_every)
    return results
