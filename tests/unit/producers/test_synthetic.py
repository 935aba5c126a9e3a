from __future__ import annotations

import dataclasses
import itertools
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from producers.sources import read_movielens
from producers.sources.synthetic import (
    Affinity,
    EventMix,
    SyntheticConfig,
    synthetic_events,
    synthetic_ratings,
    write_movielens,
)
from schemas.codec import EventCodec
from schemas.events import Event, EventType

CONFIG = SyntheticConfig(seed=11, n_users=2_000, n_items=3_000)
N = 30_000


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return list(synthetic_events(CONFIG, limit=N))


def test_limit_and_unique_ids(stream: list[Event]) -> None:
    assert len(stream) == N
    assert len({e.event_id for e in stream}) == N


def test_same_seed_same_stream_other_seed_differs(stream: list[Event]) -> None:
    again = list(synthetic_events(CONFIG, limit=N))
    assert again == stream
    other = list(synthetic_events(dataclasses.replace(CONFIG, seed=12), limit=1_000))
    assert [e.item_id for e in other] != [e.item_id for e in stream[:1_000]]


def test_prefix_of_longer_stream_is_the_shorter_stream(stream: list[Event]) -> None:
    assert list(synthetic_events(CONFIG, limit=500)) == stream[:500]


def test_zero_limit_and_negative_limit() -> None:
    assert list(synthetic_events(CONFIG, limit=0)) == []
    with pytest.raises(ValueError, match="limit"):
        synthetic_events(CONFIG, limit=-1)


def test_all_event_types_and_funnel_shape(stream: list[Event]) -> None:
    counts = Counter(e.type for e in stream)
    assert set(counts) == {
        EventType.VIEW,
        EventType.CLICK,
        EventType.ADD_TO_CART,
        EventType.PURCHASE,
        EventType.RATING,
        EventType.IMPRESSION,
    }
    assert counts[EventType.VIEW] > counts[EventType.ADD_TO_CART] > counts[EventType.PURCHASE]
    funnel_clicks = sum(1 for e in stream if e.type is EventType.CLICK and "request_id" not in e.context)
    assert counts[EventType.VIEW] > funnel_clicks > counts[EventType.ADD_TO_CART]


def test_funnel_steps_follow_a_view_of_the_same_item_by_the_same_user(stream: list[Event]) -> None:
    seen: set[tuple[str, str | None]] = set()
    for e in stream:
        if e.type is EventType.VIEW:
            seen.add((e.user_id, e.item_id))
        elif e.type in (EventType.ADD_TO_CART, EventType.PURCHASE):
            assert (e.user_id, e.item_id) in seen


def test_zipf_skew_top_one_percent_of_items_get_a_large_share_of_views(stream: list[Event]) -> None:
    views = Counter(e.item_id for e in stream if e.type is EventType.VIEW)
    top = sum(count for _, count in views.most_common(CONFIG.n_items // 100))
    assert top / sum(views.values()) > 0.3
    # ... and popularity is not just the item id order
    assert [item for item, _ in views.most_common(3)] != ["i0", "i1", "i2"]


def test_user_activity_is_skewed(stream: list[Event]) -> None:
    per_user = Counter(e.user_id for e in stream)
    top = sum(count for _, count in per_user.most_common(CONFIG.n_users // 20))
    assert top / len(stream) > 0.15  # top 5% of users well above their 5% share


def test_time_order_and_session_gaps(stream: list[Event]) -> None:
    times = [e.event_time_ms for e in stream]
    assert times == sorted(times)
    assert times[0] >= CONFIG.start_time_ms
    gap = CONFIG.session_gap_ms
    by_user: defaultdict[str, list[int]] = defaultdict(list)
    for e in stream:
        by_user[e.user_id].append(e.event_time_ms)
    deltas = [b - a for ts in by_user.values() for a, b in itertools.pairwise(ts)]
    between = [d for d in deltas if d > gap]
    within = [d for d in deltas if d <= gap]
    assert between, "some users have more than one session"
    assert within, "sessions have more than one event"
    # Inside a session events are close; between sessions the user idles longer than the gap.
    assert max(within) <= gap // 2
    assert np.median(within) < gap / 20


def test_impressions_have_valid_decisions(stream: list[Event]) -> None:
    impressions = [e for e in stream if e.type is EventType.IMPRESSION]
    assert impressions
    arms = set()
    for e in impressions:
        assert e.decision is not None
        assert 0.0 < e.decision.propensity <= 1.0
        assert e.decision.arm == e.item_id
        assert e.decision.policy == "synthetic-logging"
        arms.add(e.decision.arm)
    assert len(arms) == CONFIG.n_arms
    assert len({e.decision.request_id for e in impressions if e.decision}) == len(impressions)
    # the logging policy's propensities per (segment, arm) are fixed
    props: defaultdict[tuple[str, str], set[float]] = defaultdict(set)
    for e in impressions:
        assert e.decision is not None
        props[(e.context["segment"], e.decision.arm)].add(e.decision.propensity)
    assert all(len(p) == 1 for p in props.values())


def test_reward_clicks_answer_an_earlier_impression_of_the_same_user(stream: list[Event]) -> None:
    shown: dict[str, Event] = {}
    rewards = 0
    for e in stream:
        if e.type is EventType.IMPRESSION:
            assert e.decision is not None
            shown[e.decision.request_id] = e
        elif e.type is EventType.CLICK and "request_id" in e.context:
            rewards += 1
            imp = shown[e.context["request_id"]]
            assert imp.user_id == e.user_id
            assert imp.item_id == e.item_id
            assert imp.event_time_ms < e.event_time_ms
            assert e.value == 1.0
    n_imp = len(shown)
    assert 0.02 * n_imp < rewards < 0.3 * n_imp


def test_context_keys(stream: list[Event]) -> None:
    for e in stream:
        assert {"segment", "category", "device"} <= set(e.context)
        assert e.context["segment"].startswith("s")
        assert e.context["device"] in {"mobile", "desktop", "app"}


def test_ratings_are_stars_driven_by_the_hidden_affinity(stream: list[Event]) -> None:
    ratings = [e for e in stream if e.type is EventType.RATING]
    assert len(ratings) > 300
    assert {e.value for e in ratings} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    affinity = Affinity(CONFIG.seed, CONFIG.n_users, CONFIG.n_items, CONFIG.rank, CONFIG.rating_noise)
    users = np.array([int(e.user_id[1:]) for e in ratings])
    items = np.array([int(str(e.item_id)[1:]) for e in ratings])
    truth = affinity.expected(users, items)
    values = np.array([e.value for e in ratings], dtype=float)
    assert np.corrcoef(truth, values)[0, 1] > 0.7


def test_every_event_survives_the_avro_codec(stream: list[Event]) -> None:
    codec = EventCodec()
    now = stream[-1].event_time_ms
    for e in stream[:5_000]:
        assert codec.decode(codec.encode(e), now_ms=now) == e


def test_small_population_still_keeps_gaps() -> None:
    config = SyntheticConfig(seed=2, n_users=5, n_items=20, n_arms=3)
    events = list(synthetic_events(config, limit=3_000))
    by_user: defaultdict[str, list[int]] = defaultdict(list)
    for e in events:
        by_user[e.user_id].append(e.event_time_ms)
    for ts in by_user.values():
        for a, b in itertools.pairwise(ts):
            assert b - a <= config.session_gap_ms // 2 or b - a > config.session_gap_ms
    assert [e.event_time_ms for e in events] == sorted(e.event_time_ms for e in events)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_users": 0}, "n_users"),
        ({"impression_rate": 1.5}, "impression_rate"),
        ({"n_arms": 50, "n_items": 10}, "n_arms"),
        ({"mean_events_per_session": 0.5}, "mean_events_per_session"),
    ],
)
def test_config_validation(change: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticConfig(**change)  # type: ignore[arg-type]


def test_event_mix_must_be_a_funnel() -> None:
    with pytest.raises(ValueError, match="funnel"):
        EventMix(view=0.5, click=0.6)


def test_synthetic_ratings_shape_and_determinism() -> None:
    ratings = list(synthetic_ratings(2_000, n_users=50, n_items=80, seed=4))
    assert ratings == list(synthetic_ratings(2_000, n_users=50, n_items=80, seed=4))
    assert all(e.type is EventType.RATING for e in ratings)
    assert {e.value for e in ratings} <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len({e.value for e in ratings}) >= 4
    assert len({e.event_id for e in ratings}) == len(ratings)
    times = [e.event_time_ms for e in ratings]
    assert times == sorted(times) and all(t % 1000 == 0 for t in times)
    affinity = Affinity(4, 50, 80)
    truth = affinity.expected(
        np.array([int(e.user_id[1:]) for e in ratings]), np.array([int(str(e.item_id)[1:]) for e in ratings])
    )
    assert np.corrcoef(truth, [e.value for e in ratings])[0, 1] > 0.7


def test_movielens_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    events = list(synthetic_ratings(300, n_users=20, n_items=30, seed=5))
    assert write_movielens(path, [*events, Event("v", EventType.VIEW, "u1", 1, "i1")]) == 300
    back = list(read_movielens(path))
    assert [(e.user_id, e.item_id, e.value, e.event_time_ms) for e in back] == [
        (e.user_id, e.item_id, e.value, e.event_time_ms) for e in events
    ]


def test_write_movielens_rejects_ids_with_whitespace(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MovieLens"):
        write_movielens(tmp_path / "u.data", [Event("e", EventType.RATING, "a user", 1, "i1", 3.0)])
