"""Attribution end to end: the job credits clicks and purchases to the variant whose list led to them.

Real Kafka, Redis and the job (`pulse job run --bounded`, MiniCluster). Served lists go to the
served topic as serving logs them, outcomes to the events topic naming the list's request id; the
two topics are read side by side, so some outcomes reach the job before their list (issue #18,
"Attribution in the job").
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import redis as redis_lib
from confluent_kafka import Producer

from config import Settings
from config.experiments import Experiment, Variant
from producers.producer import EventProducer
from producers.topics import ensure_topics
from schemas import DeadLetterCodec, Event, EventType, ServedItem, ServedList, ServedListCodec
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import run_bounded_job
from tests.integration.test_job import read_topic

pytestmark = pytest.mark.flink_job

HOME = Experiment(name="home", surface="recommendations", salt="t",
                  variants=[Variant(name="A", policy="mf", share=0.5), Variant(name="B", policy="mf", share=0.5)])
CTR = {"A": 0.10, "B": 0.20}


def planted(n_lists: int, seed: int, experiment: Experiment = HOME, ctr: dict[str, float] = CTR,
            n_users: int = 200) -> tuple[list[ServedList], list[Event], dict[str, Counter[str]]]:
    """Lists served to ``n_users`` users; each clicked with its variant's CTR, a third of the clicked bought."""
    rng, base = random.Random(seed), 1_750_000_000_000
    lists, events, want = [], [], {"A": Counter(), "B": Counter()}
    for n in range(n_lists):
        user = f"u{rng.randrange(n_users)}"
        variant = experiment.assign(user).name
        at = base + 100 * n
        items = tuple(ServedItem(f"i{rng.randrange(500)}", p, 1.0 - p / 10) for p in range(5))
        lists.append(ServedList(f"{experiment.name}-r{n}", user, at, "recommendations", "model", "mf", "pulse", None,
                                experiment.name, variant, None, items))
        want[variant]["exposures"] += 1
        name = experiment.name
        events.append(Event(f"{name}-v{n}", EventType.VIEW, user, at + 500, item_id=items[0].item_id))  # no outcome
        if rng.random() < ctr[variant]:
            clicks = 1 + (rng.random() < 0.2)
            for c in range(clicks):
                events.append(Event(f"{name}-c{n}.{c}", EventType.CLICK, user, at + 1_000 + c,
                                    item_id=items[c].item_id, context={"request_id": f"{name}-r{n}"}))
            want[variant].update(clicked=1, clicks=clicks)
            if rng.random() < 1 / 3:
                events.append(Event(f"{name}-p{n}", EventType.PURCHASE, user, at + 2_000,
                                    item_id=items[0].item_id, context={"request_id": f"{name}-r{n}"}))
                want[variant].update(purchased=1, purchases=1)
    return lists, events, want


def test_every_click_and_purchase_is_credited_to_its_variant_once(settings: Settings, tmp_path: Path,
                                                                   redis_url: str) -> None:
    settings = settings.model_copy(update={"experiments": (HOME,), "checkpoint_dir": tmp_path / "checkpoints"})
    assert settings.attribution_on  # auto: a recommendations experiment is configured
    ensure_topics(settings)
    lists, events, want = planted(3_000, seed=3)
    codec, failed = ServedListCodec(), []
    producer = Producer(settings.kafka_config())
    # The lists in the second half go out after the events: their outcomes reach the job first.
    half = len(lists) // 2
    with EventProducer(settings) as events_out:
        for served in lists[:half]:
            producer.produce(settings.topic_served, key=served.user_id, value=codec.encode(served),
                             on_delivery=lambda err, _: failed.append(err) if err else None)
        producer.produce(settings.topic_served, key="bad", value=b"not a served list")
        assert producer.flush(30) == 0
        for _ in events_out.send_all(iter(events)):
            pass
    for served in lists[half:]:
        producer.produce(settings.topic_served, key=served.user_id, value=codec.encode(served),
                         on_delivery=lambda err, _: failed.append(err) if err else None)
    assert producer.flush(30) == 0 and failed == []

    run_bounded_job(settings, log=tmp_path / "job.log")

    client = redis_lib.Redis.from_url(redis_url)
    stored = Envelope.from_fields(client.hgetall(RedisKeys(settings.redis_prefix).experiment("home")))
    got = stored.payload["variants"]
    for variant in ("A", "B"):
        expected = {name: want[variant][name] for name in got[variant]}
        assert got[variant] == expected, (variant, got[variant], expected)
    print(f"\nattribution: {got}")
    assert got["B"]["clicked"] / got["B"]["exposures"] > got["A"]["clicked"] / got["A"]["exposures"]
    dead = [DeadLetterCodec().decode(v) for v in read_topic(settings, settings.topic_dlq, expected=1)]
    assert [(d["source_topic"], d["reason"]) for d in dead] == [(settings.topic_served, "bad_magic")], dead
