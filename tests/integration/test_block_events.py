"""Block events end to end: v1 and v2 producers side by side, the job counts both and writes the blocks.

Real Kafka, Redis, the job (`pulse job run --bounded`, MiniCluster) and the serving shim (issue #16,
point 3; event schema version 2, ADR 0010). A block event ("not interested" in an item or a
category) lands in the user's block sets, which serving reads on every request.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from config import Settings
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys
from serving.sync_reads import user_part
from tests.integration.jobs import run_bounded_job
from tests.integration.test_serving import serve  # noqa: F401 -- the fixture: a running shim per settings update

pytestmark = pytest.mark.flink_job

SPEC = "synthetic:users=60,items=200"


def send(settings: Settings, events: list[Event], event_schema: int, failures: list[BaseException]) -> None:
    try:
        with EventProducer(settings, event_schema=event_schema) as producer:
            for _ in producer.send_all(iter(events)):
                pass
        assert producer.report.produced == len(events)
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread
        failures.append(exc)


def test_v1_and_v2_producers_side_by_side_the_job_counts_both_and_blocks_hold(
    serve: Any, settings: Settings, tmp_path: Path, redis_url: str,  # noqa: F811
) -> None:
    ensure_topics(settings)
    old = list(open_source(SPEC, seed=1, limit=1_500))  # an old producer: schema version 1, no blocks
    new = list(open_source(SPEC, seed=2, limit=1_500, block_share=0.1))
    blocks = [e for e in new if e.type is EventType.BLOCK]
    assert blocks and any(e.item_id for e in blocks) and any(e.category for e in blocks)
    failures: list[BaseException] = []
    senders = [threading.Thread(target=send, args=(settings, old, 1, failures)),
               threading.Thread(target=send, args=(settings, new, 2, failures))]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=120)
    assert not failures, failures

    run_bounded_job(settings, log=tmp_path / "job.log")

    client, keys = redis_lib.Redis.from_url(redis_url), RedisKeys(settings.redis_prefix)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for event in old + new:
        counts[event.user_id][event.type.value] += 1
    for user, want in counts.items():
        stored = user_part(client, keys, user, "counts")
        assert stored is not None and stored.payload["counts"] == dict(want), (user, stored, want)
    blocked_items: dict[str, set[str]] = defaultdict(set)
    blocked_categories: dict[str, set[str]] = defaultdict(set)
    for event in blocks:
        if event.item_id:
            blocked_items[event.user_id].add(event.item_id)
        else:
            blocked_categories[event.user_id].add(str(event.category))
    for user, items in blocked_items.items():
        assert {m.decode() for m in client.smembers(keys.blocks(user))} == items
    for user, categories in blocked_categories.items():
        assert {m.decode() for m in client.smembers(keys.blocked_categories(user))} == categories
    print(f"\n{len(old):,} v1 + {len(new):,} v2 events counted; {len(blocks)} blocks "
          f"({sum(map(len, blocked_items.values()))} items, {sum(map(len, blocked_categories.values()))} "
          f"categories) in the users' block sets")

    # The next request holds them: no blocked item in the user's list.
    shim = serve(redis_prefix=settings.redis_prefix)
    for user, items in blocked_items.items():
        answer = shim.get(f"/v1/users/{user}/recommendations", params={"k": 50})
        assert answer.status_code == 200, answer.text
        assert not items & {item["item_id"] for item in answer.json()["items"]}, user
