from __future__ import annotations

import itertools
import math

from online_models.evaluation import learning_seconds, progressive_validation, rating_triples
from schemas.events import Event, EventType


def rating(k: int, t: int, value: float = 3.0) -> Event:
    return Event(f"e{k}", EventType.RATING, f"u{k}", t, item_id=f"i{k}", value=value)


def test_rating_triples_sorts_stably_by_event_time_and_keeps_only_ratings() -> None:
    events = [rating(0, 5), rating(1, 1), Event("c", EventType.CLICK, "u", 0, item_id="i"), rating(2, 5), rating(3, 1)]
    assert [u for u, _, _ in rating_triples(events)] == ["u1", "u3", "u0", "u2"]


def test_predicts_before_learning_and_computes_errors() -> None:
    calls: list[tuple[str, ...]] = []
    learned: dict[tuple[str, str], float] = {}

    def predict(user: str, item: str) -> float:
        calls.append(("predict", user))
        return learned.get((user, item), 0.0)

    def learn(user: str, item: str, y: float) -> None:
        calls.append(("learn", user))
        learned[(user, item)] = y

    ticks = itertools.count()
    progress: list[int] = []
    ratings = [("a", "x", 3.0), ("a", "x", 3.0), ("b", "x", 4.0)]
    result = progressive_validation(
        ratings, predict, learn, clock=lambda: float(next(ticks)), on_progress=progress.append, progress_every=2
    )
    assert calls == [
        ("predict", "a"),
        ("learn", "a"),
        ("predict", "a"),
        ("learn", "a"),
        ("predict", "b"),
        ("learn", "b"),
    ]
    assert result.n == 3 and result.seconds == 1.0
    assert result.mae == (3 + 0 + 4) / 3
    assert result.rmse == math.sqrt((9 + 0 + 16) / 3)
    assert result.events_per_s == 3.0 and result.us_per_event == 1e6 / 3
    assert sum(progress) == 3


def test_empty_stream() -> None:
    result = progressive_validation([], lambda u, i: 0.0, lambda u, i, y: None)
    assert result.n == 0 and math.isnan(result.rmse)
    assert learning_seconds([], lambda u, i, y: None) >= 0
