"""New items from day one, end to end: real Kafka, the job (`pulse job run`, MiniCluster), Redis, the shim.

A planted-structure synthetic stream (every user has a taste category that gets most of their
visits) runs through the job with its catalogue; after the warm-up, new items of every category
are published on the ``items`` topic, then 1,000 more events arrive, none of them with a new
item. The job runs as in production (unbounded) with the default 30-minute session gap, so by the
end most users' sessions have closed: serving reads a user's taste from the open session, else from
the items of the user's closed sessions that the job keeps in the user's value.
The job has learned no factors for the new items, so no stored list holds them (today's 0%,
``PULSE_SERVING_NEW_ITEM_SLOTS=0``); with the slots on (serving/new_items.py), the users of a
category must find one of its new items in their top-20.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from config import Settings
from producers.catalogue import synthetic_catalogue, user_tastes
from producers.producer import EventProducer, ItemProducer
from producers.sources import open_source, parse_synthetic_overrides
from producers.topics import ensure_topics
from schemas.redis_keys import RedisKeys, item_id_of_key
from serving.sync_reads import user_part
from tests.integration.jobs import run_job_until
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

pytestmark = pytest.mark.flink_job

OVERRIDES = "users=300,items=400,categories=5,taste=0.8"
SPEC = f"synthetic:{OVERRIDES}"
SEED = 16
WARM_UP, AFTER, NEW_PER_CATEGORY = 4_000, 1_000, 3


def produce(settings: Settings, producer_type: Any, records: list[Any]) -> None:
    with producer_type(settings) as producer:
        for _ in producer.send_all(iter(records)):
            pass
    assert producer.report.produced == len(records) and producer.report.ok


def top20(client: Any, user: str) -> tuple[str, list[str]]:
    response = client.get(f"/v1/users/{user}/recommendations", params={"k": 20})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["source"], [item["item_id"] for item in body["items"]]


def reach(client: Any, tastes: dict[str, str], new: dict[str, str]) -> tuple[dict[str, float], int, float]:
    """Per category, the share of its users (with a model list) whose top-20 holds a new item of it;
    how many users; the share of the served new items that are of the user's taste category."""
    reached: dict[str, list[bool]] = defaultdict(list)
    served: list[bool] = []
    for user, taste in tastes.items():
        source, items = top20(client, user)
        if source == "model":
            reached[taste].append(any(new.get(item) == taste for item in items))
            served += [new[item] == taste for item in items if item in new]
    shares = {c: sum(hits) / len(hits) for c, hits in sorted(reached.items())}
    return shares, sum(map(len, reached.values())), sum(served) / len(served) if served else 0.0


def test_new_items_reach_the_users_of_their_category_before_any_interaction(
    serve: Any, settings: Settings, tmp_path: Path,  # noqa: F811
) -> None:
    started = time.monotonic()
    # 30-minute gaps over the stream's 3.8 h of event time: most sessions close. From the stored
    # lists alone (no category taste yet on 5,000 events) the reach was about 40 %.
    assert settings.session_gap_ms == 30 * 60 * 1000
    config = parse_synthetic_overrides(OVERRIDES, seed=SEED)
    ensure_topics(settings)
    catalogue = list(synthetic_catalogue(config, new_items=NEW_PER_CATEGORY * config.n_categories))
    old, new_items = catalogue[:config.n_items], catalogue[config.n_items:]
    events = list(open_source(SPEC, seed=SEED, limit=WARM_UP + AFTER))
    new = {item.item_id: str(item.category) for item in new_items}
    assert not any(event.item_id in new for event in events)  # no interaction with a new item, ever

    produce(settings, ItemProducer, old)
    produce(settings, EventProducer, events[:WARM_UP])
    published_ms = events[WARM_UP - 1].event_time_ms  # published after the warm-up, newer than the old entries
    produce(settings, ItemProducer, [dataclasses.replace(item, updated_ms=published_ms) for item in new_items])
    produce(settings, EventProducer, events[WARM_UP:])
    expected = Counter(event.user_id for event in events)
    rc, keys = redis_lib.Redis.from_url(settings.redis_url), RedisKeys(settings.redis_prefix)
    # Sessions whose gap ended well before the stream's last event (minus the out-of-orderness and a
    # margin for the partitions' last events) must close once the job has read everything.
    last_seen: dict[str, int] = {}
    for event in events:
        last_seen[event.user_id] = max(last_seen.get(event.user_id, 0), event.event_time_ms)
    end_ms = max(last_seen.values()) - settings.watermark_out_of_orderness_ms - 120_000
    must_close = {user for user, t in last_seen.items() if t + settings.session_gap_ms < end_ms}
    assert len(must_close) >= len(expected) // 2  # the stream's shape: most sessions end before it does

    def all_read() -> bool:
        if not all(rc.exists(keys.catalogue_item(item)) for item in new):
            return False
        for user, n in expected.items():
            counts = user_part(rc, keys, user, "counts")
            if counts is None or counts.payload.get("events") != n:
                return False
        for user in must_close:  # closed by event-time timers, which follow the watermark
            session = user_part(rc, keys, user, "session")
            if session is None or session.payload.get("open"):
                return False
        return items_settled()

    def written_items() -> set[str]:
        return {found[0] for found in (item_id_of_key(name.decode(), keys.prefix)
                                       for name in rc.scan_iter(match=f"{keys.prefix}:item:{{*", count=1000))
                if found is not None}

    seen: list[set[str]] = []

    def items_settled() -> bool:
        # The item stage writes an item's record and lists it with two messages, so a job stopped
        # between their flushes leaves a record not yet listed (its restart writes both again from
        # the checkpoint). Stop only once the item stage is quiet: the same records in three polls a
        # second apart (two of the stage's refreshes), every one listed.
        seen.append(written_items())
        return len(seen) > 2 and seen[-1] == seen[-2] == seen[-3] and listed() == seen[-1]

    def listed() -> set[str]:
        return {member.decode() for member in rc.smembers(keys.learned_items())}

    run_job_until(settings, all_read, log=tmp_path / "job.log")
    sessions = [user_part(rc, keys, user, "session") for user in expected]
    closed = [s.payload for s in sessions if s is not None and not s.payload.get("open")]
    assert len(closed) >= len(must_close)
    assert all(payload.get("history") for payload in closed)  # the job kept their past sessions' items
    assert not any(rc.exists(keys.item_record(item)) for item in new)  # the model has learned none of them
    # Every item the job wrote is in the set serving reads items by (no SCAN of the keyspace there).
    written = written_items()
    assert written and listed() == written
    rc.close()

    tastes = user_tastes(config)
    before, _, _ = reach(serve(redis_prefix=settings.redis_prefix, serving_new_item_slots=0), tastes, new)
    client = serve(redis_prefix=settings.redis_prefix, serving_new_item_slots=2)
    deadline = time.monotonic() + 10.0  # the worker's catalogue and new-items reads (every 0.5 s)
    while not any(item in new for user in list(tastes)[:20] for item in top20(client, user)[1]):
        assert time.monotonic() < deadline, "no new item served to any of 20 users within 10 s"
        time.sleep(0.2)
    after, users, on_taste = reach(client, tastes, new)
    overall = sum(after.values()) / len(after)
    print(f"\nnew items: {overall:.0%} of users of category C have a new item in their top-20 within "
          f"{AFTER:,} events (before: {sum(before.values()) / len(before):.0%}); per category "
          + ", ".join(f"{c} {share:.0%}" for c, share in after.items())
          + f"; {users} users with a model list ({len(closed)} with their sessions closed); {on_taste:.0%} of "
          f"the new items served are of the user's taste category; took {time.monotonic() - started:.0f} s")
    assert all(share == 0.0 for share in before.values())
    assert min(after.values()) >= 0.5
