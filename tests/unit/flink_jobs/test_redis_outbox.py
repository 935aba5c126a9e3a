"""The outbox coalesces a key's writes as the writer's event-time guard would: an older write never wins."""

from __future__ import annotations

from typing import Any

from flink_jobs.messages import RedisWrite
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
