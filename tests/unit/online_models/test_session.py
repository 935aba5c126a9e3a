from __future__ import annotations

import copy
import pickle
import random

import pytest

from online_models import session
from online_models.session import LateEvent, SessionState, SessionSummary, step
from schemas.events import Event, EventType

MIN = 60_000


def ev(k: int, minute: float, kind: EventType = EventType.VIEW, category: str | None = "books") -> Event:
    return Event(
        event_id=f"e{k}",
        type=kind,
        user_id="u1",
        event_time_ms=int(minute * MIN),
        item_id=None if kind is EventType.ERASE else f"i{k % 5}",
        context={} if category is None else {"category": category},
    )


def fold(events: list[Event], **kw: int) -> tuple[SessionState | None, list[session.SessionOutput]]:
    state: SessionState | None = None
    out: list[session.SessionOutput] = []
    for e in events:
        state, emitted = step(state, e, **kw)
        out.extend(emitted)
    return state, out


def test_counts_dwell_recent_and_categories() -> None:
    events = [
        ev(1, 0), ev(2, 1, EventType.CLICK), ev(3, 2, EventType.ADD_TO_CART, "toys"),
        ev(4, 5, EventType.PURCHASE), ev(6, 7, EventType.IMPRESSION, None),
    ]  # fmt: skip
    state, out = fold(events)
    assert out == [] and state is not None
    summary = session.close(state)
    assert summary.dwell_ms == 7 * MIN
    assert dict(summary.counts) == {"view": 1, "click": 1, "add_to_cart": 1, "purchase": 1, "impression": 1}
    assert dict(summary.categories) == {"books": 3, "toys": 1}
    assert summary.recent_items == ("i2", "i3", "i4", "i1")  # e6 is item i1, the latest
    assert summary.session_id == "e1"


def test_recent_items_are_bounded_and_distinct() -> None:
    state, _ = fold([ev(k, k) for k in range(12)], max_recent=3)
    assert state is not None
    assert session.close(state).recent_items == ("i4", "i0", "i1")  # events 9, 10, 11


def test_gap_closes_and_opens_a_new_session() -> None:
    state, out = fold([ev(1, 0), ev(2, 10), ev(3, 40)])
    assert [type(o) for o in out] == [SessionSummary]
    assert isinstance(out[0], SessionSummary) and out[0].end_ms == 10 * MIN and out[0].n_events == 2
    assert state is not None and state.session_id == "e3" and state.n_events == 1


def test_gap_is_exclusive_like_flink_session_windows() -> None:
    _, out = fold([ev(1, 0), ev(2, 30)], gap_ms=30 * MIN)
    assert len(out) == 1
    _, out = fold([ev(1, 0), ev(2, 29.999)], gap_ms=30 * MIN)
    assert out == []


def test_out_of_order_within_lateness_is_counted() -> None:
    state, out = fold([ev(1, 10), ev(2, 20), ev(3, 16)], allowed_lateness_ms=5 * MIN)
    assert out == [] and state is not None
    assert state.n_events == 3 and state.n_late == 1 and state.end_ms == 20 * MIN
    state, out = fold([ev(1, 10), ev(2, 12), ev(3, 8)], allowed_lateness_ms=5 * MIN)
    assert state is not None and state.start_ms == 8 * MIN  # dwell grows backwards


def test_too_late_is_reported_not_dropped() -> None:
    late = ev(3, 10)
    state, out = fold([ev(1, 10), ev(2, 20), late], allowed_lateness_ms=5 * MIN)
    assert out == [LateEvent(late, "e1", 10 * MIN)]
    assert state is not None and state.n_events == 2


def test_timer_closes_only_after_deadline() -> None:
    state, _ = fold([ev(1, 0), ev(2, 3)])
    assert state is not None
    deadline = session.deadline_ms(state)
    assert deadline == 33 * MIN
    assert session.on_timer(state, deadline - 1) == (state, [])
    closed, out = session.on_timer(state, deadline)
    assert closed is None and out == [session.close(state)]
    assert session.on_timer(None, deadline) == (None, [])


def test_erase_drops_the_session_without_summary() -> None:
    state, out = fold([ev(1, 0), ev(2, 1, EventType.ERASE)])
    assert state is None and out == []


def test_rejects_another_users_event() -> None:
    state, _ = step(None, ev(1, 0))
    with pytest.raises(ValueError, match="session of"):
        step(state, Event("x", EventType.VIEW, "u2", 0, item_id="i"))


def test_step_does_not_mutate_its_inputs() -> None:
    state, _ = fold([ev(1, 0), ev(2, 1)])
    event = ev(3, 2, EventType.CLICK)
    before = copy.deepcopy((state, event))
    step(state, event)
    assert (state, event) == before


def test_state_bytes_and_pickle_round_trip() -> None:
    state, _ = fold([ev(k, k * 0.5, EventType.CLICK if k % 2 else EventType.VIEW) for k in range(30)])
    assert state is not None
    blob = state.to_bytes()
    assert SessionState.from_bytes(blob) == state
    assert SessionState.from_bytes(blob).to_bytes() == blob
    assert pickle.loads(pickle.dumps(state)) == state
    assert pickle.loads(pickle.dumps(session.close(state))) == session.close(state)
    with pytest.raises(ValueError, match="trailing"):
        SessionState.from_bytes(blob + b"\0")


def _recent_by_sorting(recent: tuple[tuple[int, str], ...], t: int, item: str, max_recent: int) -> tuple:
    """The recent items as the general case computes them: each item's newest time, sorted, the last ones kept."""
    latest = {seen: time for time, seen in recent}
    latest[item] = max(t, latest.get(item, t))
    return tuple(sorted((time, seen) for seen, time in latest.items()))[-max_recent:]


@pytest.mark.parametrize("seed", range(5))
def test_recent_items_in_order_match_the_general_case(seed: int) -> None:
    # Mostly in order, with ties on time, repeated items and a few late events: the fast path for
    # in-order events must give the same tuple as sorting every time.
    rng = random.Random(seed)
    state: SessionState | None = None
    t = 0
    for k in range(400):
        t += rng.choice([0, 0, 1, 5, 60])
        minute = t - rng.choice([0, 0, 0, 0, 3]) if k % 7 == 0 else t
        event = Event(f"e{k}", EventType.VIEW, "u1", minute * 1000, item_id=f"i{rng.randrange(12)}")
        before = state.recent if state is not None else ()
        state, _ = step(state, event, max_recent=6)
        assert state is not None
        assert state.recent == _recent_by_sorting(before, event.event_time_ms, event.item_id or "", 6)
