"""Attribution survives a crash: a SIGKILL of the job between barriers neither loses nor doubles a credit.

The user stage holds each user's exposures (and outcomes parked for a list still on its way) in
its record, and the experiment stage holds the sums; both are restored from the last checkpoint
and the two topics are replayed from its offsets, in whatever order the sources read them
(issue #18: "Attribution is exact under a TaskManager kill").
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib
from confluent_kafka import Producer

from config import Settings
from flink_jobs.launch import latest_checkpoint
from producers.topics import ensure_topics
from schemas import ServedList, ServedListCodec
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import run_job_until, stop_job, tail
from tests.integration.test_attribution import HOME, planted
from tests.reliability.test_cached_state import produce, start_until_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]


def send_lists(settings: Settings, lists: list[ServedList], rate: float | None = None) -> None:
    codec, failed, producer = ServedListCodec(), [], Producer(settings.kafka_config())
    started = time.monotonic()
    for n, served in enumerate(lists):
        producer.produce(settings.topic_served, key=served.user_id, value=codec.encode(served),
                         on_delivery=lambda err, _: failed.append(err) if err else None)
        producer.poll(0)
        if rate and (ahead := started + n / rate - time.monotonic()) > 0:
            time.sleep(ahead)
    assert producer.flush(30) == 0 and failed == []


def results(client: redis_lib.Redis, keys: RedisKeys) -> dict[str, dict[str, int]]:
    stored = Envelope.from_fields_or_none(client.hgetall(keys.experiment("home")))
    return {} if stored is None else stored.payload["variants"]


def test_sigkill_between_barriers_loses_and_doubles_no_credit(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"experiments": (HOME,), "checkpoint_dir": tmp_path / "chk",
                                           "checkpoint_interval_ms": 10_000})
    ensure_topics(settings)
    lists, events, want = planted(6_000, seed=11)
    expected = {variant: {name: want[variant][name] for name in
                          ("exposures", "clicked", "clicks", "carted", "purchased", "purchases")}
                for variant in ("A", "B")}
    cut_lists, cut_events = len(lists) // 3, len(events) // 3
    send_lists(settings, lists[:cut_lists])
    produce(settings, events[:cut_events])
    client, keys = redis_lib.Redis.from_url(settings.redis_url), RedisKeys(settings.redis_prefix)

    log = tmp_path / "job.log"
    job, checkpoint = start_until_checkpoint(settings, log)
    deadline = time.monotonic() + 300

    def exposures() -> int:
        return sum(counts["exposures"] for counts in results(client, keys).values())

    at_checkpoint = exposures()
    # The rest paced in from two producers (lists a little behind the events: outcomes come first).
    senders = [threading.Thread(target=send_lists, args=(settings, lists[cut_lists:], 600), daemon=True),
               threading.Thread(target=produce, args=(settings, events[cut_events:], 700), daemon=True)]
    for sender in senders:
        sender.start()
    while exposures() < at_checkpoint + 700:
        assert job.poll() is None and time.monotonic() < deadline, f"no progress after the checkpoint:\n{tail(log)}"
        time.sleep(0.1)
    still = latest_checkpoint(settings.checkpoint_path())
    stop_job(job, signal.SIGKILL)
    killed_at = exposures()
    assert still == checkpoint, "a newer checkpoint completed before the kill: the kill must land between barriers"
    for sender in senders:
        sender.join(timeout=120)

    run_job_until(settings, lambda: results(client, keys) == expected, "--restore", str(checkpoint),
                  log=tmp_path / "job-restored.log")
    assert results(client, keys) == expected
    print(f"\nkilled {killed_at - at_checkpoint} exposures after {checkpoint.name}; restored: {expected}")
