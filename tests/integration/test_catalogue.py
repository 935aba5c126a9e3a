"""The catalogue end to end: an item marked unavailable on the items topic stops being served within 2 s.

Real Kafka, Redis, the job (`pulse job run`, MiniCluster) and the serving app (issue #16, point 1).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib
from confluent_kafka import Producer

from config import Settings
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import DeadLetterCodec, Item, ItemCodec
from schemas.redis_keys import RedisKeys, UserKind
from serving.sync_reads import user_envelopes
from tests.integration.jobs import start_job, stop_job, tail
from tests.integration.test_job import read_topic
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

pytestmark = pytest.mark.flink_job

K = 10


def publish(settings: Settings, *entries: Item | bytes) -> None:
    """Catalogue entries (or raw bytes) to the items topic, keyed by item id as a producer would
    (a compacted topic refuses records without a key)."""
    codec, failed = ItemCodec(), []
    producer = Producer(settings.kafka_config())
    for entry in entries:
        value = entry if isinstance(entry, bytes) else codec.encode(entry)
        producer.produce(settings.topic_items, value=value, key="bad" if isinstance(entry, bytes) else entry.item_id,
                         on_delivery=lambda err, _: failed.append(err) if err else None)
    assert producer.flush(10) == 0 and failed == []


def served(client: httpx.Client, user: str) -> list[str]:
    body = client.get(f"/v1/users/{user}/recommendations", params={"k": K}).json()
    assert body["source"] == "model", body
    return [item["item_id"] for item in body["items"]]


def wait_until(condition: Any, timeout_s: float, every_s: float = 0.05) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(every_s)
    return time.monotonic() - started


def test_an_unavailable_item_leaves_every_list_within_2_s_and_comes_back(
    serve: Any, settings: Settings, tmp_path: Path, redis_url: str,  # noqa: F811
) -> None:
    # The claim holds at the default checkpoint interval (5 s). A checkpoint every second (as this test once
    # took) adds a barrier alignment a second at the Redis sink, whose other inputs the catalogue then waits for:
    # CI, under the other test worker's load, once saw the entry reach Redis after more than 2 s that way.
    settings = settings.model_copy(update={"checkpoint_dir": tmp_path / "checkpoints"})
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=7, limit=1500))
    with EventProducer(settings) as producer:
        for _ in producer.send_all(iter(events)):
            pass
    keys, client = RedisKeys(settings.redis_prefix), redis_lib.Redis.from_url(redis_url)
    job = start_job(settings, "--restore", "none", log=tmp_path / "job.log")
    try:
        user, _ = Counter(e.user_id for e in events if e.item_id is not None).most_common(1)[0]
        user_events = sum(e.user_id == user for e in events)

        def settled() -> bool:
            """The user's value holds all the user's events, so its list no longer moves on its own (an
            item could otherwise leave it for a newer list, not for the catalogue)."""
            parts = user_envelopes(client, keys, user)
            counts = parts.get(UserKind.COUNTS)
            return parts.get(UserKind.RECS) is not None and counts is not None and \
                counts.payload["events"] == user_events

        wait_until(settled, timeout_s=120)
        shim = serve(redis_prefix=settings.redis_prefix)
        before = served(shim, user)
        gone = before[0]
        now = int(time.time() * 1000)
        # Unavailable now; an older entry saying "available" arrives after it and must not win; one bad entry.
        publish(settings, Item(gone, updated_ms=now, category="c1", available=False),
                Item(gone, updated_ms=now - 60_000, category="c1", available=True), b"\x00not an item")
        published = time.monotonic()
        in_redis: list[float] = []  # when the job's write was first seen: tells the job's part from serving's

        def gone_from_the_list() -> bool:
            if not in_redis and client.sismember(keys.catalogue_index("unavailable"), gone):
                in_redis.append(time.monotonic() - published)
            return gone not in served(shim, user)

        try:
            took = wait_until(gone_from_the_list, timeout_s=2.0)
        except AssertionError:
            # Say how late it was, and which side was late, before failing.
            wait_until(lambda: client.sismember(keys.catalogue_index("unavailable"), gone), timeout_s=60)
            late = in_redis[0] if in_redis else time.monotonic() - published
            raise AssertionError(f"not within 2 s: the job wrote the entry to Redis after {late:.2f} s") from None
        after = served(shim, user)
        print(f"catalogue: {gone} unavailable -> gone from {user}'s top-{K} in {took:.2f} s "
              f"(in Redis after {in_redis[0] if in_redis else took:.2f} s); "
              f"before {before[:4]}..., after {after[:4]}...")
        assert len(after) == K and gone not in after
        assert client.sismember(keys.catalogue_index("unavailable"), gone)
        assert client.hget(keys.catalogue_index("category"), gone) == b"c1"
        publish(settings, Item(gone, updated_ms=now + 1, category="c2", available=True))
        wait_until(lambda: gone in served(shim, user), timeout_s=2.0)
        assert client.hget(keys.catalogue_index("category"), gone) == b"c2"
        # Dead letters are committed with the next checkpoint, which the running job takes.
        dead = [DeadLetterCodec().decode(value) for value in read_topic(settings, settings.topic_dlq, expected=1)]
        assert [(d["original"], d["source_topic"]) for d in dead] == [(b"\x00not an item", settings.topic_items)]
    except AssertionError as exc:
        indexes = {name: client.type(keys.catalogue_index(name)) for name in ("unavailable", "category", "version")}
        raise AssertionError(f"{exc}\ncatalogue in Redis: {indexes}\njob log:\n{tail(tmp_path / 'job.log')}") from exc
    finally:
        stop_job(job)
