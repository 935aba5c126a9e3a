"""Users held in memory between barriers (ADR 0007): what a checkpoint or savepoint does not yet hold is not lost.

The user stage keeps each user's record in Python memory and writes the changed ones to keyed
state only in the batch sent before a barrier. So between two barriers the newest state of many
users exists only in memory. These tests put a failure and a savepoint exactly there:

* a SIGKILL after a checkpoint completed and while later batches had changed users (visible in
  Redis): the restored job must redo those users from the checkpoint plus Kafka replay, exactly;
* a stop-with-savepoint while a paced producer is still sending: the restored job must continue
  every user from the savepoint, exactly.

"Exactly": every user's counts per event type, every user's count of learned events, and the
model's events learned all equal what was produced — a lost batch makes them short, a doubled one long.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from config import Settings
from flink_jobs.launch import latest_checkpoint
from infra.local.flink import FlinkCluster
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas.events import Event
from schemas.redis_keys import Envelope, RedisKeys
from serving.sync_reads import user_part
from tests.conftest import isolated_settings
from tests.integration.jobs import pulse_job, run_job_until, start_job, stop_job, tail

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]

LEARNABLE = {"view", "click", "add_to_cart", "purchase", "rating"}


class Expected:
    """What Redis must show once every event is processed exactly once."""

    def __init__(self, events: list[Event]) -> None:
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.learned: Counter[str] = Counter()
        for event in events:
            self.counts[event.user_id][event.type.value] += 1
            self.learned[event.user_id] += event.type.value in LEARNABLE
        self.total_learned = sum(self.learned.values())

    def difference(self, client: redis_lib.Redis, keys: RedisKeys) -> str | None:
        """None when Redis shows exactly this, else the first difference."""
        model = learned_by_model(client, keys)
        if model != self.total_learned:
            return f"model learned {model}, want {self.total_learned}"
        for user, counts in self.counts.items():
            stored = user_part(client, keys, user, "counts")
            got = None if stored is None else (stored.payload["counts"], stored.payload["learned"])
            if got != (dict(counts), self.learned[user]):
                return f"{user}: want {dict(counts)} / learned {self.learned[user]}, Redis has {got}"
        return None


def learned_by_model(client: redis_lib.Redis, keys: RedisKeys) -> int:
    model = Envelope.from_fields_or_none(client.hgetall(keys.model("mf")))
    return 0 if model is None else int(model.payload["events_learned"])


def produce(settings: Settings, events: list[Event], rate: float | None = None) -> None:
    with EventProducer(settings) as producer:
        for _ in producer.send_all(events, rate=rate):
            pass
    assert producer.report.produced == len(events)


def produce_in_background(
    settings: Settings, events: list[Event], rate: float
) -> tuple[threading.Thread, list[BaseException]]:
    """Produce ``events`` paced at ``rate`` from a thread; its failure, if any, lands in the list."""
    failure: list[BaseException] = []

    def paced() -> None:
        try:
            produce(settings, events, rate=rate)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    producer = threading.Thread(target=paced, daemon=True)
    producer.start()
    return producer, failure


def test_sigkill_between_a_batch_and_the_next_barrier_loses_and_doubles_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    # Long checkpoint interval: after a checkpoint, many batches change users only in memory.
    settings = settings.model_copy(update={"checkpoint_dir": tmp_path / "chk", "checkpoint_interval_ms": 10_000})
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=41, limit=30_000))
    # The first part is there before the job starts; the rest is paced in after the first checkpoint,
    # so the kill lands mid-stream however fast this machine drains the first part.
    first, rest = events[:10_000], events[10_000:]
    produce(settings, first)
    expected = Expected(events)
    client, keys = redis_lib.Redis.from_url(settings.redis_url), RedisKeys(settings.redis_prefix)

    log = tmp_path / "job.log"
    job, checkpoint = start_until_checkpoint(settings, log)
    deadline = time.monotonic() + 300
    at_checkpoint = learned_by_model(client, keys)
    producer, failure = produce_in_background(settings, rest, rate=3_000)  # ~7 s of events after the barrier
    # Wait for batches after that barrier to show in Redis, while no newer checkpoint completed.
    while learned_by_model(client, keys) < at_checkpoint + 2_000:
        assert job.poll() is None and time.monotonic() < deadline, f"no progress after the checkpoint:\n{tail(log)}"
        time.sleep(0.1)
    still = latest_checkpoint(settings.checkpoint_path())
    stop_job(job, signal.SIGKILL)
    killed_at = learned_by_model(client, keys)
    assert still == checkpoint, "a newer checkpoint completed before the kill: the kill must land between barriers"
    assert killed_at < expected.total_learned, "the kill must land mid-stream"
    producer.join(timeout=120)
    assert not failure, failure

    run_job_until(settings, lambda: expected.difference(client, keys) is None, "--restore", str(checkpoint),
                  log=tmp_path / "job-restored.log")
    assert expected.difference(client, keys) is None
    print(f"\nkilled {killed_at - at_checkpoint} learned events after {checkpoint.name} completed "
          f"(learned {killed_at} of {expected.total_learned}); restored: {len(expected.counts)} users' counts, "
          f"learned counts and the model's {expected.total_learned} learned events exact")


def test_a_savepoint_taken_under_load_restores_every_users_cached_state(
    kafka_bootstrap: str, redis_url: str, flink_cluster: FlinkCluster, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, flink_rest_port=flink_cluster.shape.rest_port,
                                 checkpoint_dir=tmp_path / "chk", savepoint_dir=tmp_path / "savepoints",
                                 checkpoint_interval_ms=30_000)  # only the savepoint writes users back here
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=43, limit=24_000))
    expected = Expected(events)
    client, keys = redis_lib.Redis.from_url(settings.redis_url), RedisKeys(settings.redis_prefix)
    log = tmp_path / "pulse-job.log"

    # A first part waits for the job; the rest is paced in once it learns (~26 s at 800 ev/s), so the
    # savepoint lands while events arrive however long the job took to start.
    first, rest = events[:3_000], events[3_000:]
    produce(settings, first)
    job = pulse_job(settings, "submit", "--parallelism", "1", log=log)
    wait_for(lambda: learned_by_model(client, keys) > 2_000, "the job learning", log)
    producer, failure = produce_in_background(settings, rest, rate=800)
    wait_for(lambda: learned_by_model(client, keys) > 3_500, "the job learning under load", log)
    savepoint = Path(pulse_job(settings, "savepoint", "--stop", "--job-id", job, log=log))
    learned_at_savepoint = learned_by_model(client, keys)
    assert producer.is_alive(), "the savepoint must be taken while events still arrive"
    assert (savepoint / "_metadata").is_file()

    job = pulse_job(settings, "submit", "--parallelism", "1", "--restore", str(savepoint), log=log)
    producer.join(timeout=120)
    assert not failure, failure
    wait_for(lambda: expected.difference(client, keys) is None, "exact counts after the restore", log)
    pulse_job(settings, "cancel", "--job-id", job, log=log)
    print(f"\nsavepoint {savepoint.name} under load at {learned_at_savepoint} learned events; restored: "
          f"{len(expected.counts)} users' counts, learned counts and {expected.total_learned} learned events exact")


def start_until_checkpoint(settings: Settings, log: Path, timeout_s: float = 300) -> tuple[Any, Path]:
    """Start the job afresh and wait for its first completed checkpoint; the job and the checkpoint."""
    job = start_job(settings, "--restore", "none", log=log)
    deadline = time.monotonic() + timeout_s
    while (checkpoint := latest_checkpoint(settings.checkpoint_path())) is None:
        assert job.poll() is None and time.monotonic() < deadline, f"no checkpoint in time:\n{tail(log)}"
        time.sleep(0.2)
    return job, checkpoint


def wait_for(check: Callable[[], bool], what: str, log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout_s:.0f}s\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
