from __future__ import annotations

import math

import pytest

from online_models.popularity import ALL, DecayedPopularity, InteractionWeights
from schemas.events import Event, EventType

HOUR = 3_600_000


def ev(item: str, hours: float, kind: EventType = EventType.VIEW, segment: str | None = None) -> Event:
    context = {} if segment is None else {"segment": segment}
    return Event("e", kind, "u", int(hours * HOUR), item_id=item, context=context)


def test_half_life_in_event_time() -> None:
    pop = DecayedPopularity(half_life_ms=HOUR)
    pop.learn_event(ev("a", 0))
    pop.learn_event(ev("b", 2))
    assert pop.score("a") == pytest.approx(0.25)
    assert pop.score("a", at_ms=5 * HOUR) == pytest.approx(2**-5)
    assert pop.top_n(5) == [("b", 1.0), ("a", 0.25)]


def test_segments_and_weights() -> None:
    pop = DecayedPopularity(half_life_ms=HOUR)
    pop.learn_event(ev("a", 0, EventType.PURCHASE, "fr"))
    pop.learn_event(ev("b", 0, EventType.CLICK, "de"))
    pop.learn_event(ev("c", 0, EventType.IMPRESSION, "de"))
    assert pop.top_n(5, segment="fr") == [("a", 4.0)]
    assert pop.top_n(5, segment="de") == [("b", 2.0)]
    assert pop.top_n(5, segment=ALL) == [("a", 4.0), ("b", 2.0)]
    assert pop.top_n(5, segment="nowhere") == []
    assert pop.top_n(5, exclude=frozenset({"a"})) == [("b", 2.0)]
    assert InteractionWeights().weight(EventType.ERASE) == 0.0


def test_out_of_order_events_count_decayed() -> None:
    pop = DecayedPopularity(half_life_ms=HOUR)
    pop.learn_event(ev("a", 3))
    pop.learn_event(ev("a", 2))
    assert pop.score("a") == pytest.approx(1.5)


def test_landmark_moves_without_changing_counts_and_prunes() -> None:
    pop = DecayedPopularity(half_life_ms=HOUR, prune_below=1e-6)
    pop.learn_event(ev("old", 0))
    for k in range(1, 200):
        pop.learn_event(ev("steady", k))
    assert math.isfinite(pop.score("steady"))
    assert pop.score("steady") == pytest.approx(sum(2.0**-j for j in range(199)))
    assert "old" not in dict(pop.top_n(10))  # decayed to ~2**-199 and pruned
    blob = pop.to_bytes()
    assert DecayedPopularity.from_bytes(blob).to_bytes() == blob


def test_rejects_bad_half_life() -> None:
    with pytest.raises(ValueError):
        DecayedPopularity(half_life_ms=0)
