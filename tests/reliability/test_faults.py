"""Faults during a replay: nothing lost, nothing counted twice, every bad record in the DLQ.

The job runs on the local standalone cluster (JobManager + 2 TaskManagers) against a Kafka broker
and a Redis server of this test's own, so both can be stopped. While a paced replay of synthetic
events (with malformed payloads mixed in) is produced, at seeded random points:

* the TaskManager running the job is SIGKILLed, 3 times (Flink restarts the job from its latest
  checkpoint on the surviving TaskManager; the killed one is started again);
* Redis is stopped for 30 s and started again (the serving shim is asked for scores meanwhile);
* the Kafka broker is restarted once.

After the stream drains: every user's counts in Redis equal the input exactly, the DLQ holds
exactly the injected payloads, and the learner's event counter equals the learnable input.

Size: ``PULSE_RELIABILITY_EVENTS`` (default 30,000 in ``make test``; ``make soak`` runs 200,000) at
``PULSE_RELIABILITY_RATE`` events/s (default 250).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from infra.local.flink import FlinkCluster
from infra.local.kafka import KafkaBroker
from infra.local.process import ServiceError, free_port
from infra.local.redis import RedisServer
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from pulse.flink_rest import FlinkRest
from pulse.lag import LagProbe
from schemas import DecodeReason, Event, EventCodec
from schemas.redis_keys import Envelope, RedisKeys
from serving import create_app
from serving.server import running
from serving.sync_reads import user_part
from tests.conftest import isolated_settings
from tests.integration.jobs import pulse_job
from tests.reliability.test_bad_input import digest, read_dead_letters
from tests.services import start_on_free_ports
from tests.unit.schemas.test_codec import MALFORMED

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]

N_EVENTS = int(os.environ.get("PULSE_RELIABILITY_EVENTS", "30000"))
RATE = float(os.environ.get("PULSE_RELIABILITY_RATE", "250"))
BAD_EVERY = 250  # one malformed payload per this many good events
REDIS_OUTAGE_S = 30.0
LEARNABLE = {"view", "click", "add_to_cart", "purchase", "rating"}
#: Kinds of malformed payload mixed in (oversized ones are covered by test_bad_input).
BAD_KINDS = [r for r in DecodeReason if r is not DecodeReason.TOO_LARGE]


@dataclass
class Replay:
    """The paced producer: good events with malformed payloads mixed in, on a thread of its own."""

    settings: Settings
    events: list[Event]
    produced: int = 0
    bad: Counter[tuple[bytes, str]] = field(default_factory=Counter)
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="replay", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            codec, rng = EventCodec(), random.Random(5)
            started = time.monotonic()
            # Kafka restarts while this runs: idempotent producer, deliveries wait up to 5 minutes.
            with EventProducer(self.settings, **{"linger.ms": 5, "delivery.timeout.ms": 300_000}) as producer:
                for n, event in enumerate(self.events, start=1):
                    producer.send(event)
                    if n % BAD_EVERY == 0:
                        reason = BAD_KINDS[(n // BAD_EVERY) % len(BAD_KINDS)]
                        payload = MALFORMED[reason](codec, rng, n)
                        producer.send_raw(None, payload)
                        self.bad[(digest(payload), reason.value)] += 1
                    self.produced = n
                    if n % 50 == 0 and (ahead := n / RATE - (time.monotonic() - started)) > 0:
                        time.sleep(ahead)
            report = producer.report
            assert report.failed == 0, f"producer failures: {report.errors}"
            assert report.produced == len(self.events) + sum(self.bad.values())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self.error = exc

    def wait_until(self, fraction: float) -> None:
        while self.produced < fraction * len(self.events) and self.thread and self.thread.is_alive():
            time.sleep(0.2)
        if self.error:
            raise self.error

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=N_EVENTS / RATE + 600)
        if self.error:
            raise self.error


@dataclass
class OwnServices:
    kafka: KafkaBroker
    redis: RedisServer


@pytest.fixture
def own_services(tmp_path: Path) -> Iterator[OwnServices]:
    """A broker and a Redis of this test alone: it stops and restarts them."""
    home = tmp_path / "services"
    home.mkdir()
    (home / "jars").symlink_to(REPO_ROOT / ".local" / "jars", target_is_directory=True)
    redis = start_on_free_ports(lambda: RedisServer(home, free_port()), timeout_s=60)
    kafka = start_on_free_ports(lambda: KafkaBroker(home, free_port(), free_port()), timeout_s=120)
    try:
        yield OwnServices(kafka, redis)
    finally:
        kafka.process.stop()
        redis.process.stop()


def test_replay_with_taskmanager_kills_redis_outage_and_broker_restart_loses_and_doubles_nothing(
    own_services: OwnServices, flink_cluster: FlinkCluster, tmp_path: Path
) -> None:
    kafka, redis_server = own_services.kafka, own_services.redis
    settings = isolated_settings(kafka.bootstrap, redis_server.url, flink_rest_port=flink_cluster.shape.rest_port,
                                 checkpoint_dir=tmp_path / "chk", checkpoint_interval_ms=2000, restart_attempts=1000)
    ensure_topics(settings)
    log = tmp_path / "pulse-job.log"
    events = list(open_source("synthetic", seed=77, limit=N_EVENTS))
    want: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        want[event.user_id][event.type.value] += 1
    learnable = sum(1 for e in events if e.type.value in LEARNABLE)

    job = pulse_job(settings, "submit", "--parallelism", "1", log=log)
    rest = FlinkRest(flink_cluster.address)
    replay = Replay(settings, events)
    replay.start()
    rng = random.Random(N_EVENTS)
    points = sorted(rng.uniform(lo, hi) for lo, hi in ((0.1, 0.2), (0.3, 0.4), (0.5, 0.6), (0.65, 0.75),
                                                       (0.8, 0.9)))
    faults: list[Callable[[], str]] = [
        lambda: kill_taskmanager(flink_cluster, rest, job, settings),
        lambda: redis_outage(redis_server, settings),
        lambda: kill_taskmanager(flink_cluster, rest, job, settings),
        lambda: restart_broker(kafka, settings),
        lambda: kill_taskmanager(flink_cluster, rest, job, settings),
    ]
    outcomes = []
    for point, fault in zip(points, faults, strict=True):
        replay.wait_until(point)
        outcomes.append(f"at {replay.produced:>7,} events ({point:.0%}): {fault()}")
    replay.join()

    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    deadline = time.monotonic() + 600
    while (got := stored_counts(client, keys, want)) != want:
        assert time.monotonic() < deadline, f"counts not exact after 600 s: {difference(want, got)}"
        time.sleep(2)
    lost = sum(max(0, want[u][t] - got[u][t]) for u in want for t in want[u])
    doubled = sum(max(0, got[u][t] - want[u][t]) for u in got for t in got[u])
    model = Envelope.from_fields_or_none(client.hgetall(keys.model("mf")))
    assert model is not None
    learned = int(model.payload["events_learned"])
    injected = sum(replay.bad.values())
    dead_letters = read_dead_letters(settings, injected)
    restarts = rest.restarts(job)
    pulse_job(settings, "cancel", "--job-id", job, log=log)

    print(f"\nreliability run: {N_EVENTS:,} events at {RATE:g}/s, {len(want):,} users, {injected} malformed mixed in")
    for line in outcomes:
        print("  " + line)
    print(f"  events in {N_EVENTS:,}, events counted {sum(sum(c.values()) for c in got.values()):,}, "
          f"lost = {lost}, double-counted = {doubled}")
    print(f"  learner events {learned:,} (learnable input {learnable:,}); DLQ = {sum(dead_letters.values())} "
          f"(injected {injected}); job restarts {restarts}")
    assert lost == 0 and doubled == 0
    assert learned == learnable, "the learner saw an event twice (or missed one)"
    assert dead_letters == replay.bad
    assert restarts >= 3, "each TaskManager kill must have restarted the job"


# -- faults -------------------------------------------------------------------------------------


def kill_taskmanager(cluster: FlinkCluster, rest: FlinkRest, job_id: str, settings: Settings) -> str:
    """SIGKILL the TaskManager running the job, start it again; seconds until the lag is back to normal."""
    index = taskmanager_of(cluster, job_id)
    pid = cluster.taskmanagers[index - 1].pid()
    assert pid is not None
    backlog = end_offsets(settings)
    restarts = rest.restarts(job_id)
    killed = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    while cluster.taskmanagers[index - 1].pid() is not None:
        time.sleep(0.1)
    cluster.start_taskmanager(index)
    while rest.restarts(job_id) == restarts:  # Flink noticed the loss and restarted the job...
        assert time.monotonic() - killed < 120, "the job did not restart after its TaskManager was killed"
        time.sleep(0.1)
    taskmanager_of(cluster, job_id)  # ...and every task of it runs again (on either TaskManager)
    running = time.monotonic() - killed
    recovered = wait_caught_up(settings, backlog, since=killed)
    return (f"SIGKILL TaskManager {index} (pid {pid}) -> job running again after {running:.1f} s, "
            f"zero lag (everything produced before the kill committed) after {recovered:.1f} s")


def redis_outage(server: RedisServer, settings: Settings) -> str:
    """Stop Redis for 30 s while the serving shim is asked for scores; what the shim answered."""
    statuses: Counter[str] = Counter()
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=5) as http:
        user = "u1"
        backlog = end_offsets(settings)
        stopped = time.monotonic()
        server.process.stop()
        while time.monotonic() - stopped < REDIS_OUTAGE_S:
            response = http.get(f"/v1/users/{user}/recommendations", params={"k": 5})
            source = response.json().get("source", "") if response.status_code == 200 else ""
            statuses[f"{response.status_code}{' ' + source if source else ''}"] += 1
            time.sleep(0.5)
        server.start(timeout_s=60)
        back = http.get(f"/v1/users/{user}/recommendations", params={"k": 5}).status_code
    assert set(statuses) <= {"503", "200 popularity"}, f"during the outage the shim answered {statuses}"
    recovered = wait_caught_up(settings, backlog, since=stopped)
    answered = ", ".join(f"{n} × {s}" for s, n in sorted(statuses.items()))
    return (f"Redis stopped {REDIS_OUTAGE_S:.0f} s: serving answered {answered}, then {back}; "
            f"job back to zero lag {recovered:.1f} s after the stop")


def restart_broker(broker: KafkaBroker, settings: Settings) -> str:
    """Stop the Kafka broker and start it again; seconds until the lag is back to normal."""
    backlog = end_offsets(settings)
    stopped = time.monotonic()
    broker.process.stop()
    try:
        broker.start(timeout_s=120)
    except ServiceError as first:
        # Seen under client traffic: the fresh broker JVM ends with 143 (SIGTERM) before it logs a
        # line, a second or so after the old one stopped; a second start works. Say so, then retry.
        child = broker.process._child
        print(f"\nbroker restart failed once (exit {child and child.returncode}), retrying: "
              f"{str(first).splitlines()[0]}")
        broker.start(timeout_s=120)
    down_s = time.monotonic() - stopped
    recovered = wait_caught_up(settings, backlog, since=stopped)
    return f"Kafka broker restarted (down {down_s:.1f} s) -> back to zero lag in {recovered:.1f} s"


# -- measurements -------------------------------------------------------------------------------


def taskmanager_of(cluster: FlinkCluster, job_id: str) -> int:
    """1-based index of the TaskManager the job's tasks run on (resource id pulse-tm-N)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = httpx.get(f"{cluster.rest_url}/jobs/{job_id}", timeout=5).json()
        if job["state"] == "RUNNING" and all(v["status"] == "RUNNING" for v in job["vertices"]):
            vertex = job["vertices"][0]["id"]
            found = httpx.get(f"{cluster.rest_url}/jobs/{job_id}/vertices/{vertex}/taskmanagers", timeout=5).json()
            ids = {tm["taskmanager-id"] for tm in found["taskmanagers"]}
            if len(ids) == 1:
                return int(ids.pop().rsplit("-", 1)[1])
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not running on one TaskManager within 120 s")


def end_offsets(settings: Settings) -> dict[int, int]:
    """High watermark of every partition of the events topic, now."""
    with LagProbe(settings) as probe:
        return {p.partition: p.high for p in probe.partitions()}


def wait_caught_up(settings: Settings, backlog: dict[int, int], since: float, timeout_s: float = 300) -> float:
    """Seconds from ``since`` until the job's committed offsets reach ``backlog`` (the end offsets at
    the fault): zero lag for everything produced before it. Offsets commit with each checkpoint."""
    deadline = time.monotonic() + timeout_s
    with LagProbe(settings) as probe:
        while time.monotonic() < deadline:
            try:
                committed = {p.partition: p.committed or 0 for p in probe.partitions()}
            except Exception:  # noqa: BLE001 - the broker may still be coming back
                committed = {}
            if committed and all(committed.get(part, 0) >= end for part, end in backlog.items()):
                return time.monotonic() - since
            time.sleep(0.25)
    raise AssertionError(f"the job's committed offsets did not reach {backlog} within {timeout_s} s")


def stored_counts(client: redis_lib.Redis, keys: RedisKeys, users: dict[str, Counter[str]]) -> dict[str, Counter[str]]:
    """Every user's counts as Redis holds them (one pipeline)."""
    got: dict[str, Counter[str]] = defaultdict(Counter)
    for user in users:
        stored = user_part(client, keys, user, "counts")
        got[user] = Counter(stored.payload["counts"]) if stored else Counter()
    return got


def difference(want: dict[str, Counter[str]], got: dict[str, Counter[str]]) -> str:
    wrong = [u for u in want if want[u] != got.get(u)]
    return f"{len(wrong)} users differ, e.g. {wrong[0]}: want {dict(want[wrong[0]])}, got {dict(got[wrong[0]])}"
