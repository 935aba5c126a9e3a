"""What ``pulse demo`` shows: this run's counts and rates beside the model's lifetime, and a few users.

The model's ``events_learned`` (Redis model metadata) counts every event the job has learned since
its state began, across runs (it resumes from its checkpoints); the demo counts what it produced in
this run. Both are shown, each labelled, with "learned this run" (the lifetime count minus the
count when the run started) and both rates side by side, so a glance says whether the job keeps up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis as redis_lib
from rich.table import Table

from schemas.redis_keys import Envelope, RedisKeys, UserKind
from serving.sync_reads import user_envelopes


@dataclass
class Rate:
    """Per-second rate of a growing count, measured over at least ``window_s``.

    >>> r = Rate(window_s=2.0)
    >>> r.update(0.0, 0), r.update(1.0, 500), r.update(2.0, 2000), r.update(3.0, 2500)
    (0.0, 0.0, 1000.0, 1000.0)
    """

    window_s: float = 2.0
    rate: float = 0.0
    _since: tuple[float, int] | None = field(default=None, repr=False)

    def update(self, now: float, count: int) -> float:
        """Record ``count`` at ``now`` (monotonic seconds); the latest rate."""
        if self._since is None:
            self._since = (now, count)
        elif now - self._since[0] >= self.window_s:
            self.rate = (count - self._since[1]) / (now - self._since[0])
            self._since = (now, count)
        return self.rate


@dataclass
class DemoCounters:
    """Produced (this run) and learned (this run, lifetime) counts, and their rates.

    >>> c = DemoCounters(learned_at_start=150_000)
    >>> c.update(0.0, produced=0, learned=150_000); c.update(2.0, produced=2_000, learned=151_900)
    >>> c.produced, c.learned_this_run, c.learned_lifetime, c.produced_rate.rate, c.learned_rate.rate
    (2000, 1900, 151900, 1000.0, 950.0)
    """

    learned_at_start: int
    produced: int = 0
    learned_lifetime: int = 0
    produced_rate: Rate = field(default_factory=Rate)
    learned_rate: Rate = field(default_factory=Rate)

    @property
    def learned_this_run(self) -> int:
        """Events the model learned since this run started (never negative: a restore may rewind the count)."""
        return max(0, self.learned_lifetime - self.learned_at_start)

    def update(self, now: float, produced: int, learned: int) -> None:
        """Take this moment's counts."""
        self.produced, self.learned_lifetime = produced, learned
        self.produced_rate.update(now, produced)
        self.learned_rate.update(now, self.learned_this_run)


def learned_events(model: Envelope | None) -> int:
    """The model's lifetime ``events_learned`` (0 before the job has written its metadata)."""
    return int(model.payload["events_learned"]) if model else 0


def summary(counters: DemoCounters, model: Envelope | None) -> Table:
    """The headline table: counts of this run, the model's lifetime count, rates, RMSE and freshness."""
    table = Table(title="Pulse demo", show_header=False)
    table.add_row("events produced, this run", f"{counters.produced:,}")
    table.add_row("events learned by the job, this run", f"{counters.learned_this_run:,}")
    lifetime = f"{counters.learned_lifetime:,}  (every run since its state began)"
    table.add_row("events learned by the model, lifetime", lifetime)
    produced_rate, learned_rate = counters.produced_rate.rate, counters.learned_rate.rate
    table.add_row("rate, this run", f"produced {produced_rate:,.0f}/s · learned {learned_rate:,.0f}/s")
    rmse = model.payload.get("rmse") if model else None
    table.add_row("running RMSE (prequential, lifetime)", f"{rmse:.3f}" if rmse else "-")
    if model:
        table.add_row("score freshness", f"{time.time() * 1000 - model.event_time_ms:,.0f} ms")
    table.add_row("web console (`pulse serve`)", "http://127.0.0.1:8080/console#user=<a user below>&key=<read key>")
    return table


def users_table(client: redis_lib.Redis, keys: RedisKeys, users: list[str]) -> Table:
    """Session length, top-3 items and score freshness of the given users, newest first."""
    table = Table(title="a few users, live")
    for column in ("user", "session events", "top-3 items (score)", "freshness"):
        table.add_column(column)
    for user in dict.fromkeys(reversed(users)):
        parts = user_envelopes(client, keys, user)
        session, recs = parts[UserKind.SESSION], parts[UserKind.RECS]
        top = ", ".join(f"{item} ({score:.2f})" for item, score in recs.payload["items"][:3]) if recs else "-"
        n = session.payload.get("n_events", "-") if session else "-"
        fresh = f"{time.time() * 1000 - recs.event_time_ms:,.0f} ms" if recs else "-"
        table.add_row(user, str(n), top, fresh)
    return table


__all__ = ["DemoCounters", "Rate", "learned_events", "summary", "users_table"]
