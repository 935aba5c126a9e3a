"""RefreshSchedule: at once for a quiet user, at most about once per interval for a busy one."""

from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from flink_jobs.refresh_schedule import RefreshSchedule


def test_a_quiet_user_is_refreshed_in_the_batch_that_changed_it() -> None:
    schedule = RefreshSchedule(interval_s=0.2)
    schedule.want("u1", now=1.0)
    assert "u1" in schedule
    assert schedule.take(now=1.0) == ["u1"]
    assert "u1" not in schedule


def test_a_user_refreshed_within_the_interval_waits_an_interval_after_its_change() -> None:
    schedule = RefreshSchedule(interval_s=0.2)
    schedule.want("u1", now=1.0)
    schedule.take(now=1.0)
    schedule.want("u1", now=1.1)
    assert schedule.take(now=1.29) == []
    assert schedule.take(now=1.3) == ["u1"]
    schedule.want("u1", now=1.6)  # quiet again for longer than the interval: at once
    assert schedule.take(now=1.6) == ["u1"]


def test_the_batch_before_a_barrier_takes_every_pending_user() -> None:
    schedule = RefreshSchedule(interval_s=0.2)
    schedule.want("u1", now=1.0)
    schedule.take(now=1.0)
    schedule.want("u1", now=1.05)
    schedule.want("u2", now=1.05)
    assert sorted(schedule.take(now=1.05, everyone=True)) == ["u1", "u2"]
    assert schedule.take(now=5.0, everyone=True) == []


def test_an_erased_user_has_nothing_pending() -> None:
    schedule = RefreshSchedule(interval_s=0.2)
    schedule.want("u1", now=1.0)
    schedule.drop("u1")
    assert schedule.take(now=2.0, everyone=True) == []


def test_old_refreshes_are_forgotten() -> None:
    schedule = RefreshSchedule(interval_s=0.2)
    for i in range(100):
        schedule.want(f"u{i}", now=1.0)
    schedule.take(now=1.0)
    schedule.take(now=1.5)
    assert schedule.refreshed == {}


@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 30)), max_size=60))
def test_every_change_is_refreshed_and_a_users_refreshes_are_an_interval_apart(changes: list[tuple[str, int]]) -> None:
    """Batches every 10 ms (interval 100 ms), changes in the first 300 ms: each change is refreshed."""
    schedule = RefreshSchedule(interval_s=0.1)
    refreshed: dict[str, list[float]] = {}
    pending: set[str] = set()
    for tick in range(0, 50):
        now = tick * 0.01
        for user, at in changes:
            if at == tick and user not in pending:
                schedule.want(user, now)
                pending.add(user)
        for user in schedule.take(now):
            pending.discard(user)
            refreshed.setdefault(user, []).append(now)
    assert not pending  # every change refreshed, at most an interval and a batch after it
    for times in refreshed.values():
        assert all(later - earlier >= 0.1 - 1e-9 for earlier, later in pairwise(times))
