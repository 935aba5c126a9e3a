"""What ``pulse demo`` shows: this run's counts and rates beside the model's lifetime, and a few users.

The model's ``events_learned`` (Redis model metadata) counts every event the job has learned since
its state began, across runs (it resumes from its checkpoints); the demo counts what it produced in
this run. Both are shown, each labelled, with "learned this run" (the lifetime count minus the
count when the run started) and both rates side by side, so a glance says whether the job keeps up.
"""

from __future__ import annotations

import statistics
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
    >>> c.update(0.0, produced=0, learned=150_000); c.update(2.0, produced=2_000, learned=151_900, learnable=1_950)
    >>> c.produced, c.learned_this_run, c.learned_lifetime, c.produced_rate.rate, c.learned_rate.rate
    (2000, 1900, 151900, 1000.0, 950.0)
    >>> c.learnable_rate.rate
    975.0
    """

    learned_at_start: int
    produced: int = 0
    learned_lifetime: int = 0
    produced_rate: Rate = field(default_factory=Rate)
    learnable_rate: Rate = field(default_factory=Rate)  # produced events the model learns from (with a target)
    learned_rate: Rate = field(default_factory=Rate)

    @property
    def learned_this_run(self) -> int:
        """Events the model learned since this run started (never negative: a restore may rewind the count)."""
        return max(0, self.learned_lifetime - self.learned_at_start)

    def update(self, now: float, produced: int, learned: int, learnable: int = 0) -> None:
        """Take this moment's counts (``learnable``: the produced events with a learning target)."""
        self.produced, self.learned_lifetime = produced, learned
        self.produced_rate.update(now, produced)
        self.learnable_rate.update(now, learnable)
        self.learned_rate.update(now, self.learned_this_run)


@dataclass
class RunRecord:
    """What a demo run saw once the job caught up with the stream (its start-up backlog drained).

    The job starts while the stream already runs, so its first seconds are a backlog; from the
    first look with the newest scores under ``caught_up_ms`` old, each look's rates and newest
    score age are kept for the run's closing line.

    >>> r = RunRecord()
    >>> r.look(5.0, produced_rate=3000.0, learnable_rate=2600.0, learned_rate=900.0, newest_score_ms=9000.0)
    >>> for t, age in ((30.0, 300.0), (31.0, 500.0), (32.0, 900.0)):
    ...     r.look(t, produced_rate=3000.0, learnable_rate=2600.0, learned_rate=2590.0, newest_score_ms=age)
    >>> for part in r.line().split("; "):
    ...     print(part)
    caught up with the stream after 30 s
    since then (3 looks): produced 3,000/s (2,600/s with a learning target), learned 2,590/s (medians)
    newest score freshness median 500 ms, max 900 ms
    """

    caught_up_ms: float = 1000.0
    caught_up_at_s: float | None = None
    produced_rates: list[float] = field(default_factory=list)
    learnable_rates: list[float] = field(default_factory=list)
    learned_rates: list[float] = field(default_factory=list)
    newest_scores_ms: list[float] = field(default_factory=list)

    def look(self, elapsed_s: float, produced_rate: float, learnable_rate: float, learned_rate: float,
             newest_score_ms: float | None) -> None:
        """Take one look, ``elapsed_s`` into the run."""
        if self.caught_up_at_s is None:
            if newest_score_ms is None or newest_score_ms > self.caught_up_ms:
                return
            self.caught_up_at_s = elapsed_s
        self.produced_rates.append(produced_rate)
        self.learnable_rates.append(learnable_rate)
        self.learned_rates.append(learned_rate)
        if newest_score_ms is not None:
            self.newest_scores_ms.append(newest_score_ms)

    def line(self) -> str:
        """One line: when the job caught up, then the median rates and the newest score's freshness."""
        if self.caught_up_at_s is None:
            return f"the job did not catch up (newest scores never under {self.caught_up_ms:,.0f} ms old)"
        text = (f"caught up with the stream after {self.caught_up_at_s:,.0f} s; since then ({len(self.produced_rates)} "
                f"looks): produced {statistics.median(self.produced_rates):,.0f}/s "
                f"({statistics.median(self.learnable_rates):,.0f}/s with a learning target), "
                f"learned {statistics.median(self.learned_rates):,.0f}/s (medians)")
        if self.newest_scores_ms:
            text += (f"; newest score freshness median {statistics.median(self.newest_scores_ms):,.0f} ms, "
                     f"max {max(self.newest_scores_ms):,.0f} ms")
        return text


def newest_score_ms(client: redis_lib.Redis, keys: RedisKeys, users: list[str], now_ms: float) -> float | None:
    """Age of the newest scores among ``users`` (now minus the latest event time their scores reflect)."""
    times = [recs.event_time_ms for user in dict.fromkeys(users)
             if (recs := user_envelopes(client, keys, user)[UserKind.RECS]) is not None]
    return now_ms - max(times) if times else None


def learned_events(model: Envelope | None) -> int:
    """The model's lifetime ``events_learned`` (0 before the job has written its metadata)."""
    return int(model.payload["events_learned"]) if model else 0


def summary(counters: DemoCounters, model: Envelope | None, newest_score: float | None = None) -> Table:
    """The headline table: counts of this run, the model's lifetime count, rates, RMSE and freshness."""
    table = Table(title="Pulse demo", show_header=False)
    table.add_row("events produced, this run", f"{counters.produced:,}")
    table.add_row("events learned by the job, this run", f"{counters.learned_this_run:,}")
    lifetime = f"{counters.learned_lifetime:,}  (every run since its state began)"
    table.add_row("events learned by the model, lifetime", lifetime)
    produced_rate, learned_rate = counters.produced_rate.rate, counters.learned_rate.rate
    learnable = counters.learnable_rate.rate
    table.add_row("rate, this run",
                  f"produced {produced_rate:,.0f}/s ({learnable:,.0f}/s learnable) · learned {learned_rate:,.0f}/s")
    rmse = model.payload.get("rmse") if model else None
    table.add_row("running RMSE (prequential, lifetime)", f"{rmse:.3f}" if rmse else "-")
    if newest_score is not None:  # how far behind the stream the newest scores in Redis are
        table.add_row("newest score freshness", f"{newest_score:,.0f} ms")
    if model:
        table.add_row("model metadata freshness", f"{time.time() * 1000 - model.event_time_ms:,.0f} ms")
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


__all__ = ["DemoCounters", "Rate", "RunRecord", "learned_events", "newest_score_ms", "summary", "users_table"]
