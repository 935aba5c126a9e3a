"""The outbox coalesces a key's writes as the writer's event-time guard would: an older write never wins."""

from __future__ import annotations

from typing import Any

from flink_jobs.messages import DeleteKeys, EraseUser, RedisWrite, RedisWrites
from flink_jobs.redis_outbox import RedisOutbox


class Metrics:
    def counter(self, name: str) -> Any:
        return self

    def inc(self, n: int = 1) -> None:
        pass


def test_a_later_write_replaces_a_waiting_one_unless_it_is_older() -> None:
    outbox = RedisOutbox(writer=None, flush_ms=50, metrics=Metrics())  # type: ignore[arg-type]
    newer, older, newest = (RedisWrite("k", t, {"t": t}, "k") for t in (20, 10, 30))
    outbox.add(newer)
    outbox.add(older)  # e.g. an out-of-order catalogue entry: the guard would refuse it, so does coalescing
    assert outbox.pending == {"k": newer}
    outbox.add(newest)
    assert outbox.pending == {"k": newest}


def test_an_erasure_drops_the_users_waiting_writes_even_with_a_later_event_time() -> None:
    """A value computed just before the erase event may carry a later timestamp (events sent a few ms
    apart): made before the erasure, it must not bring the user back."""
    outbox = RedisOutbox(writer=None, flush_ms=50, metrics=Metrics())  # type: ignore[arg-type]
    value = RedisWrites((RedisWrite("user:{u1}", 105, {"counts": 3}, "u1"),), "u1")
    other = RedisWrite("user:{u2}", 100, {"counts": 1}, "u2")
    outbox.add(value)
    outbox.add(other)
    outbox.add(EraseUser("u1", 102))
    assert list(outbox.pending.values()) == [other, EraseUser("u1", 102)]
    after = RedisWrites((RedisWrite("user:{u1}", 110, {"counts": 1}, "u1"),), "u1")
    outbox.add(after)  # a new event after the erasure: kept
    assert outbox.pending["user:{u1}"] == after
    outbox.add(DeleteKeys(("user:{u2}",), 101, "u2"))
    assert "user:{u2}" not in outbox.pending
