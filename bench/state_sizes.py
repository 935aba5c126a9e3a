"""What a user and an item cost in Redis, measured with Redis's own ``MEMORY USAGE`` (issue 20).

    nice -n 19 .venv/bin/python bench/state_sizes.py                          # 100,000 users, both formats
    .venv/bin/python bench/state_sizes.py --users 10000 --events 110000       # a quick run
    .venv/bin/python bench/state_sizes.py --serialized [--factors 16]         # serialized state sizes only

Method:

* A temporary ``redis-server`` on loopback and a free port (``infra/local/redis.py``, as the
  integration tests' harness), persistence off, stopped at the end, also on Ctrl-C / SIGTERM.
* A synthetic stream (``producers.sources.open_source``) over a world of ``--world`` x ``--users``
  users with uniform activity (``user_zipf=0``); the first ``--users`` users to appear keep all
  their events, later users' events are skipped, so every measured user has whole sessions.
* The events go through the job's own pure steps: :class:`flink_jobs.user_steps.UserSteps`
  (one subtask, micro-batches of 1,000 events) and, with each batch's ``ItemTouches``,
  :class:`flink_jobs.shared_steps.ItemOwner`. At the end, session timers up to the last event
  time fire (``UserSteps.on_event_timer``, as the job's watermark would), then each user's
  ``UserSteps.snapshot`` and each item's ``ItemOwner.writes`` are written with
  ``RedisWriter.write_batch`` in batches of 1,000 writes: once as format 2 (compact), then,
  after ``FLUSHALL``, as format 1 (legacy hashes); both under the settings' prefix (``pulse``).
* ``MEMORY USAGE <key> SAMPLES 0`` (pipelined) of every user's keys (format 1: the four hashes;
  format 2: the one string) and every item's key; ``INFO memory`` ``used_memory`` before and
  after as a cross-check (it also counts the main dictionary's buckets and any TTLs).

Pending impressions are not kept (no bandit scopes): they never reach a user's Redis value.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import redis
from tqdm import tqdm

from config import Settings
from flink_jobs.messages import ItemTouch, ItemTouches, RedisWrite
from flink_jobs.redis_writer import BatchItem, RedisWriter
from flink_jobs.shared_state import SharedStageConfig
from flink_jobs.shared_steps import Coalesced, ItemOwner
from flink_jobs.user_steps import UserRecord, UserStageConfig, UserSteps
from infra.local.process import ServiceError, free_port
from infra.local.redis import RedisServer
from online_models.mf_params import mf_config
from producers.sources import open_source
from schemas.redis_keys import RedisKeys, UserKind

METARANK_BYTES_PER_USER = 860
TARGET_PER_USER, TARGET_PER_ITEM = 600, 250
BATCH_EVENTS = BATCH_WRITES = 1000
PROGRESS = {"mininterval": 0.5 if sys.stderr.isatty() else 10.0, "file": sys.stderr, "unit_scale": True}


# -- the replay through the job's steps ---------------------------------------------------------


class _NoImpressions(dict[str, Any]):
    """Pending impressions dropped: they only feed bandits, never a user's Redis value."""

    def __setitem__(self, request_id: str, value: Any) -> None:
        pass


@dataclass
class Replay:
    """The users' records and the items' owner values after the stream."""

    steps: UserSteps
    owner: ItemOwner
    users: dict[str, UserRecord] = field(default_factory=dict)
    items: dict[str, Coalesced] = field(default_factory=dict)
    events: int = 0
    skipped: int = 0
    last_event_ms: int = 0

    def feed(self, batch: list[Any]) -> None:
        """One micro-batch of events: user steps, then the batch's touches merged per item (as the job)."""
        touches: list[ItemTouch] = []
        impressions = _NoImpressions()
        for event in batch:
            record, outputs = self.steps.on_event(self.users.get(event.user_id), event, impressions)
            if record is not None:
                self.users[event.user_id] = record
            touches.extend(o for o in outputs if isinstance(o, ItemTouch))
            self.last_event_ms = max(self.last_event_ms, event.event_time_ms)
        for touch in ItemTouches.merge(touches):
            entry = self.items.setdefault(touch.item_id, Coalesced())
            entry.value = self.owner.apply(entry.value, touch)
            entry.event_time_ms = max(entry.event_time_ms, touch.event_time_ms)
        # The owner has applied every update (one process): what its snapshots would acknowledge.
        self.steps.replica.unacked.clear()

    def close_sessions(self) -> None:
        """Session timers up to the last event time fire, as the job's watermark would fire them."""
        for user_id, record in self.users.items():
            while record.session_timer is not None and record.session_timer <= self.last_event_ms:
                timer = record.session_timer
                self.steps.on_event_timer(user_id, record, timer, _NoImpressions())
                if record.session_timer == timer:
                    break


def stage_config(settings: Settings, value_format: str, top_k: int) -> UserStageConfig:
    """The user stage's config as ``flink_jobs.pipeline.per_user_state`` builds it (no bandit scopes)."""
    return UserStageConfig(
        mf=mf_config(settings), keys=RedisKeys(settings.redis_prefix), scopes=(),
        session_gap_ms=settings.session_gap_ms, impression_ttl_ms=settings.impression_ttl_ms, top_k=top_k,
        score_refresh_ms=settings.score_refresh_ms, redis_shards=1, value_format=value_format,
        user_ttl_ms=settings.redis_user_ttl_s * 1000,
    )


def replay(args: argparse.Namespace, settings: Settings) -> Replay:
    """Feed ``args.events`` synthetic events of the first ``args.users`` users through the job's steps."""
    config = stage_config(settings, "compact", args.top_k)
    owner = ItemOwner(config.mf, config.keys, SharedStageConfig.popularity_half_life_ms, "compact")
    state = Replay(UserSteps(config, subtask=0), owner)
    spec = (f"synthetic:users={args.users * args.world},items={args.items},user_zipf=0,"
            f"session_interarrival_ms={args.session_interarrival_ms}")
    admitted: set[str] = set()
    batch: list[Any] = []
    for event in tqdm(open_source(spec, seed=args.seed, limit=args.events), total=args.events,
                      desc="replay (events)", **PROGRESS):
        if event.user_id not in admitted:
            if len(admitted) >= args.users:
                state.skipped += 1
                continue
            admitted.add(event.user_id)
        batch.append(event)
        if len(batch) >= BATCH_EVENTS:
            state.feed(batch)
            state.events += len(batch)
            batch = []
    state.feed(batch)
    state.events += len(batch)
    state.close_sessions()
    return state


# -- writing and measuring -------------------------------------------------------------------


def user_writes(steps: UserSteps, users: dict[str, UserRecord]) -> Iterator[BatchItem]:
    for user_id, record in users.items():
        for write in steps.snapshot(user_id, record).writes:
            yield BatchItem(write.key, write.event_time_ms, write.payload)


def item_writes(owner: ItemOwner, items: dict[str, Coalesced]) -> Iterator[BatchItem]:
    for item_id, entry in items.items():
        for message in owner.writes(item_id, Coalesced(entry.value, entry.event_time_ms, True), final=True):
            if isinstance(message, RedisWrite):
                yield BatchItem(message.key, message.event_time_ms, message.payload)


def write_all(writer: RedisWriter, writes: Iterable[BatchItem], total: int, desc: str) -> int:
    """``RedisWriter.write_batch`` in batches of ``BATCH_WRITES``; the number of keys written."""
    written, batch = 0, []
    for item in tqdm(writes, total=total, desc=desc, **PROGRESS):
        batch.append(item)
        if len(batch) >= BATCH_WRITES:
            written += writer.write_batch(batch).written
            batch = []
    if batch:
        written += writer.write_batch(batch).written
    return written


def memory_usage(client: redis.Redis, keys: list[str]) -> list[int]:
    """Bytes of each key (``MEMORY USAGE key SAMPLES 0``; 0 when missing), pipelined 5,000 at a time."""
    sizes: list[int] = []
    for start in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start:start + 5000]:
            pipe.execute_command("MEMORY USAGE", key, "SAMPLES", 0)  # type: ignore[no-untyped-call]
        sizes.extend(int(reply or 0) for reply in pipe.execute())
    return sizes


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])  # type: ignore[index]


@dataclass
class Measured:
    """One format's figures: bytes per user (all its keys) and per item, and the used_memory deltas."""

    name: str
    per_user: list[int]
    per_item: list[int]
    open_session: list[int]
    user_delta: int
    item_delta: int
    per_kind: dict[str, float] = field(default_factory=dict)


def measure_format(client: redis.Redis, url: str, state: Replay, settings: Settings, legacy: bool,
                   top_k: int) -> Measured:
    """Write every user and item in one format into an empty Redis and measure it."""
    name, fmt = ("format 1 (legacy)", "legacy") if legacy else ("format 2 (compact)", "compact")
    config = stage_config(settings, fmt, top_k)
    steps = UserSteps(config, subtask=0)
    steps.replica, steps.global_params = state.steps.replica, state.steps.global_params  # the learned model
    owner = replace(state.owner, keys=config.keys, value_format=fmt)
    client.flushall()
    with RedisWriter(config.keys, settings.model_version, url=url) as writer:
        before = used_memory(client)
        write_all(writer, user_writes(steps, state.users), len(state.users) * (4 if legacy else 1),
                  f"{name}: users (writes)")
        after_users = used_memory(client)
        write_all(writer, item_writes(owner, state.items), len(state.items), f"{name}: items (writes)")
        after_items = used_memory(client)
    users, kinds = list(state.users), list(UserKind) if legacy else [None]
    keys = [config.keys.user(user, kind) if kind else config.keys.user_record(user) for user in users for kind in kinds]
    sizes = memory_usage(client, keys)
    per_user = [sum(sizes[i:i + len(kinds)]) for i in range(0, len(sizes), len(kinds))]
    open_session = [size for user, size in zip(users, per_user, strict=True) if state.users[user].session is not None]
    per_kind = {kind.value: statistics.fmean(n for n in sizes[j::len(kinds)] if n)
                for j, kind in enumerate(kinds) if kind}
    item_keys = [config.keys.item_params(i) if legacy else config.keys.item_record(i) for i in state.items]
    return Measured(name, per_user, memory_usage(client, item_keys), open_session, after_users - before,
                    after_items - after_users, per_kind)


# -- the report -----------------------------------------------------------------------------


def _mean(values: list[int]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _p90(values: list[int]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) >= 2 else float("nan")


def report(results: list[Measured], state: Replay, n_items_written: int) -> None:
    """The table and a verdict per target (on format 2, the format the job writes by default)."""
    users, learned = len(state.users), sum(1 for r in state.users.values() if r.learned)
    opened = sum(1 for r in state.users.values() if r.session is not None)
    print(f"\n{users:,} users ({learned:,} with a learned event, {opened:,} with an open session), "
          f"{n_items_written:,} items with parameters; {state.events:,} events fed "
          f"({state.skipped:,} of later users skipped); MEMORY USAGE of every user's and item's keys\n")
    width = max(len(r.name) for r in results)
    print(f"{'':<{width}}  {'user mean':>9}  {'median':>6}  {'p90':>6}  {'open session':>12}  "
          f"{'used_memory/user':>16}  {'item mean':>9}  {'used_memory/item':>16}")
    for r in results:
        print(f"{r.name:<{width}}  {_mean(r.per_user):>9,.0f}  {statistics.median(r.per_user):>6,.0f}  "
              f"{_p90(r.per_user):>6,.0f}  {_mean(r.open_session):>12,.0f}  {r.user_delta / users:>16,.0f}  "
              f"{_mean(r.per_item):>9,.0f}  {r.item_delta / max(1, len(r.per_item)):>16,.0f}")
    print(f"{'Metarank (published)':<{width}}  {METARANK_BYTES_PER_USER:>9,}")
    for r in results:
        if r.per_kind:
            parts = ", ".join(f"{kind} {size:,.0f}" for kind, size in r.per_kind.items())
            print(f"{r.name}, mean bytes per key: {parts}")
    compact = results[0]
    user_mean, item_mean, in_session = _mean(compact.per_user), _mean(compact.per_item), _mean(compact.open_session)
    print(f"\n{'PASS' if user_mean <= TARGET_PER_USER else 'FAIL'} per user <= {TARGET_PER_USER} B "
          f"({compact.name}: mean {user_mean:,.0f} B over all {users:,} users, top-{state.steps.config.top_k}; "
          f"Metarank {METARANK_BYTES_PER_USER} B)")
    print(f"{'PASS' if in_session <= TARGET_PER_USER else 'FAIL'} per user with an open session <= {TARGET_PER_USER} B "
          f"({compact.name}: mean {in_session:,.0f} B over {len(compact.open_session):,} users)")
    print(f"{'PASS' if item_mean <= TARGET_PER_ITEM else 'FAIL'} per item <= {TARGET_PER_ITEM} B "
          f"({compact.name}: mean {item_mean:,.0f} B, {state.steps.config.mf.n_factors} factors)")


# -- a temporary Redis ------------------------------------------------------------------------


@contextlib.contextmanager
def temporary_redis() -> Iterator[RedisServer]:
    """A loopback ``redis-server`` on a free port under a temporary home, persistence off; always stopped."""
    with tempfile.TemporaryDirectory(prefix="pulse-state-sizes-") as home:
        for attempt in range(3):  # a port free a moment ago may be taken first: retry on another
            server = RedisServer(Path(home), free_port())
            try:
                server.start(timeout_s=60)
                break
            except ServiceError:
                server.process.stop()
                if attempt == 2:
                    raise
        try:
            yield server
        finally:
            server.process.stop()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


# -- serialized sizes (Flink state), the earlier table of this script -------------------------


def serialized_rows(n_factors: int) -> list[tuple[str, int]]:
    """Exact byte counts of the versioned state layouts (no pickle), not estimates."""
    from online_models.mf import GlobalParams, MFConfig, OwnerSplitMF, initial_item, initial_user
    from online_models.popularity import DecayedPopularity
    from online_models.session import SessionState, step
    from schemas.events import Event, EventType

    cfg = MFConfig(n_factors=n_factors)
    model = OwnerSplitMF.from_config(cfg)
    empty = len(model.to_bytes())
    for k in range(1000):
        model.learn_one(f"user{k:06d}", "item", 4.0)  # 1000 users with 10-char ids, 1 item
    kinds = [EventType.VIEW] * 7 + [EventType.CLICK] * 3 + [EventType.ADD_TO_CART, EventType.PURCHASE]
    session: SessionState | None = None
    for k, kind in enumerate(kinds):  # a browsing session: 12 events, 8 distinct items, 3 categories
        event = Event(f"evt-{k:08d}", kind, "user000123", 1_700_000_000_000 + k * 45_000,
                      item_id=f"item{k % 8:05d}", context={"category": ("books", "toys", "garden")[k % 3]})
        session, _ = step(session, event)
    assert session is not None
    pop = DecayedPopularity()
    for k in range(1000):
        pop.learn_event(Event("e", EventType.VIEW, "u", k, item_id=f"item{k:05d}", context={"segment": "fr"}))
    rows = [
        (f"MF user part ({n_factors} factors)", len(initial_user(cfg, "123456").to_bytes())),
        (f"MF item part ({n_factors} factors)", len(initial_item(cfg, "1682").to_bytes())),
        ("MF global part", len(GlobalParams(3.5, 100_000).to_bytes())),
        ("OwnerSplitMF snapshot, per user (10-char id)", round((len(model.to_bytes()) - empty) / 1000)),
        ("session state (12 events, 8 items, 3 categories)", len(session.to_bytes())),
        ("popularity, per (segment, item) entry", round(len(pop.to_bytes()) / 2000)),
    ]
    with contextlib.suppress(ImportError):
        from online_models.bandits import bandit_state_sizes

        rows += [(f"bandit {name} (34 arms)", size) for name, size in bandit_state_sizes().items()]
    return rows


def print_serialized(n_factors: int) -> None:
    rows = serialized_rows(n_factors)
    width = max(len(name) for name, _ in rows)
    print("Serialized state sizes (Flink state):")
    for name, size in rows:
        print(f"  {name:<{width}}  {size:>6,} bytes")


# -- main -----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000, help="users measured (default 100,000)")
    parser.add_argument("--events", type=int, default=1_100_000,
                        help="synthetic events generated (default 1,100,000: about 10 per user)")
    parser.add_argument("--world", type=int, default=10,
                        help="the stream's world has WORLD x USERS users; the first USERS to appear are kept")
    parser.add_argument("--items", type=int, default=5000, help="items in the synthetic world")
    parser.add_argument("--session-interarrival-ms", type=int, default=1000,
                        help="mean ms between session starts (default 1000: ~29 h of stream time, nearly every "
                             "session closed at the end; 10: ~20 min, nearly every user in an open session)")
    parser.add_argument("--top-k", type=int, default=50, help="recommendations kept per user")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serialized", action="store_true",
                        help="print the serialized state sizes (Flink state) instead, no Redis")
    parser.add_argument("--factors", type=int, default=16, help="factors of the --serialized table")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.serialized:
        print_serialized(args.factors)
        return
    signal.signal(signal.SIGTERM, _interrupt)  # stop the temporary Redis on SIGTERM as on Ctrl-C
    started = time.perf_counter()
    settings = Settings()
    try:
        state = replay(args, settings)
        with temporary_redis() as server:
            client = redis.Redis.from_url(server.url)
            client.config_set("appendonly", "no")  # no AOF rewrite competing for the 2 cores
            results = [measure_format(client, server.url, state, settings, legacy, args.top_k)
                       for legacy in (False, True)]
            client.close()
    except KeyboardInterrupt:
        print("interrupted; the temporary Redis is stopped", file=sys.stderr)
        raise SystemExit(130) from None
    report(results, state, len(results[0].per_item))
    print(f"\n{time.perf_counter() - started:,.0f} s; {settings.mf_factors} factors; "
          f"synthetic world {args.users * args.world:,} users, {args.items:,} items, seed {args.seed}")


if __name__ == "__main__":
    main()
