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


class Writer:
    """Records what a flush sends, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def delete_user(self, user_id: str) -> None:
        self.calls.append(("delete_user", user_id))

    def delete_keys(self, keys: tuple[str, ...]) -> None:
        self.calls.append(("delete_keys", keys))

    def write_batch(self, batch: list[Any]) -> Any:
        self.calls.append(("write", [(item.key, item.event_time_ms) for item in batch]))
        return type("Result", (), {"written": len(batch), "skipped_stale": 0})()


def test_writes_made_after_an_erasure_are_flushed_after_it_whatever_their_event_time() -> None:
    """Stream order decides: an event the user sent after the erase request is new data, even with an
    older timestamp, and it is written whether or not it shares the erasure's flush."""
    writer = Writer()
    outbox = RedisOutbox(writer=writer, flush_ms=50, metrics=Metrics())  # type: ignore[arg-type]
    outbox.add(RedisWrites((RedisWrite("user:{u1}", 90, {"counts": 3}, "u1"),), "u1"))
    outbox.add(EraseUser("u1", 100))
    outbox.add(RedisWrites((RedisWrite("user:{u1}", 95, {"counts": 1}, "u1"),), "u1"))
    outbox.flush()
    assert writer.calls == [("delete_user", "u1"), ("write", [("user:{u1}", 95)])]
