"""Prequential (progressive) validation: predict each rating, then learn it, in event-time order.

The model is passed as two callables so Pulse's learners and River's run through the same
loop and their costs compare fairly. The clock is a parameter (default ``time.perf_counter``)
so that results stay reproducible in tests when it matters.

>>> from online_models.mf import OwnerSplitMF
>>> from schemas.events import Event, EventType
>>> events = [Event(f"e{k}", EventType.RATING, "u", 10 - k, item_id="i", value=4.0) for k in range(5)]
>>> model = OwnerSplitMF(n_factors=2, bias_lr=0.1, latent_lr=0.1)
>>> result = progressive_validation(rating_triples(events), model.predict_one, model.learn_one)
>>> result.n, round(result.mae, 3)
(5, 0.8)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from schemas.events import Event, EventType, ItemId, UserId

__all__ = ["PrequentialResult", "Rating", "learning_seconds", "progressive_validation", "rating_triples"]

Rating = tuple[UserId, ItemId, float]
Predict = Callable[[UserId, ItemId], float]
Learn = Callable[[UserId, ItemId, float], None]
Clock = Callable[[], float]


@dataclass(frozen=True)
class PrequentialResult:
    """Errors of predictions made before learning each rating, and the loop's wall time."""

    n: int
    rmse: float
    mae: float
    seconds: float

    @property
    def events_per_s(self) -> float:
        """Ratings predicted and learned per second."""
        return self.n / self.seconds if self.seconds > 0 else math.inf

    @property
    def us_per_event(self) -> float:
        """Microseconds per predict + learn."""
        return 1e6 * self.seconds / self.n if self.n else 0.0


def rating_triples(events: Iterable[Event]) -> list[Rating]:
    """``(user, item, value)`` of the rating events, by event time (stable: ties keep input order)."""
    ratings = [e for e in events if e.type is EventType.RATING and e.item_id is not None and e.value is not None]
    ratings.sort(key=lambda e: e.event_time_ms)
    return [(e.user_id, e.item_id, e.value) for e in ratings]  # type: ignore[misc]


def progressive_validation(
    ratings: Sequence[Rating],
    predict: Predict,
    learn: Learn,
    *,
    clock: Clock = time.perf_counter,
    on_progress: Callable[[int], None] | None = None,
    progress_every: int = 1000,
) -> PrequentialResult:
    """Predict then learn each rating in order; ``on_progress(n)`` every ``progress_every`` ratings."""
    squared = absolute = 0.0
    start = clock()
    for k, (user, item, y) in enumerate(ratings, start=1):
        error = predict(user, item) - y
        learn(user, item, y)
        squared += error * error
        absolute += abs(error)
        if on_progress is not None and k % progress_every == 0:
            on_progress(progress_every)
    seconds = clock() - start
    n = len(ratings)
    if on_progress is not None and n % progress_every:
        on_progress(n % progress_every)
    if n == 0:
        return PrequentialResult(0, math.nan, math.nan, seconds)
    return PrequentialResult(n, math.sqrt(squared / n), absolute / n, seconds)


def learning_seconds(ratings: Sequence[Rating], learn: Learn, *, clock: Clock = time.perf_counter) -> float:
    """Wall time of a plain ``learn`` loop over ``ratings`` (no predictions)."""
    start = clock()
    for user, item, y in ratings:
        learn(user, item, y)
    return clock() - start
