"""Scale-out: the job on a standalone cluster, stopped with a savepoint and resumed at 1 → 2 → 1.

Every user's state must come through each rescale intact. After each resume, one impression per
user is sent: impressions are not learned from, so the user's factors must equal those before the
savepoint bit for bit, counts must grow by exactly one, and an open session by exactly one event.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_lib

from config import Settings
from infra.local.flink import FlinkCluster
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas.events import Decision, Event, EventType
from schemas.redis_keys import RedisKeys, UserKind
from serving.sync_reads import user_envelopes, user_part
from tests.conftest import isolated_settings
from tests.integration.jobs import pulse_job

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]

N_EVENTS = 4_000


def test_rescale_1_2_1_through_savepoints_keeps_every_users_state(
    kafka_bootstrap: str, redis_url: str, flink_cluster: FlinkCluster, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_bootstrap, redis_url, flink_rest_port=flink_cluster.shape.rest_port,
                                 checkpoint_dir=tmp_path / "chk", savepoint_dir=tmp_path / "savepoints")
    ensure_topics(settings)
    log = tmp_path / "pulse-job.log"
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)

    events = list(open_source("synthetic", seed=21, limit=N_EVENTS))
    want: dict[str, Counter[str]] = defaultdict(Counter)
    last_ms: dict[str, int] = {}
    for event in events:
        want[event.user_id][event.type.value] += 1
        last_ms[event.user_id] = max(last_ms.get(event.user_id, 0), event.event_time_ms)
    produce(settings, events)

    def counts_are(expected: dict[str, Counter[str]]) -> Callable[[], str | None]:
        """None when every user's counts are as expected, else the first difference."""
        def check() -> str | None:
            for user, counts in expected.items():
                stored = user_part(client, keys, user, "counts")
                if stored is None or stored.payload["counts"] != dict(counts):
                    return f"{user}: want {dict(counts)}, Redis has {stored and stored.payload['counts']}"
            return None
        return check

    # Parallelism 1 until every event is in Redis, then stop with a savepoint.
    job = pulse_job(settings, "submit", "--parallelism", "1", log=log)
    wait_for(counts_are(want), f"counts of {len(want)} users after the first {N_EVENTS} events", log)
    assert parallelism_of(flink_cluster, job) == {1}
    before = user_state(client, keys, want)

    phases = []
    for parallelism, round_no in ((2, 1), (1, 2)):
        savepoint = Path(pulse_job(settings, "savepoint", "--stop", "--job-id", job, log=log))
        assert (savepoint / "_metadata").is_file()
        job = pulse_job(settings, "submit", "--parallelism", str(parallelism), "--restore", str(savepoint), log=log)
        # One impression per user, just after the user's last event (same session, nothing learned).
        probes = [impression(user, last_ms[user] + round_no) for user in want]
        produce(settings, probes)
        for user in want:
            want[user]["impression"] += 1
        started = time.monotonic()
        wait_for(counts_are(want), f"counts after resuming at parallelism {parallelism}", log)
        after = user_state(client, keys, want)
        assert parallelism_of(flink_cluster, job) == {parallelism}
        factors_equal = sum(after[u]["factors"] == before[u]["factors"] for u in want)
        sessions_grown = [u for u in want if before[u]["session"].get("open")]
        for user in sessions_grown:
            b, a = before[user]["session"], after[user]["session"]
            assert (a["session_id"], a["start_ms"], a["n_events"]) == (b["session_id"], b["start_ms"],
                                                                        b["n_events"] + 1), user
        assert factors_equal == len(want), f"{len(want) - factors_equal} users' factors changed across the rescale"
        phases.append((parallelism, savepoint.name, len(sessions_grown), time.monotonic() - started))
        before = after

    pulse_job(settings, "cancel", "--job-id", job, log=log)
    print(f"\n{len(want)} users, {N_EVENTS} events; 1 → 2 → 1 through savepoints:")
    for parallelism, savepoint_name, open_sessions, seconds in phases:
        print(f"  resumed at parallelism {parallelism} from {savepoint_name}: counts exact (+1 probe each), "
              f"factors equal for all {len(want)}, {open_sessions} open sessions +1 event; state visible in "
              f"{seconds:.1f}s")


def impression(user_id: str, event_time_ms: int) -> Event:
    """An impression (not learned from; its reward stays pending) just after the user's last event."""
    request_id = f"probe-{uuid.uuid4().hex}"
    return Event(request_id, EventType.IMPRESSION, user_id, event_time_ms, item_id="probe-item",
                 decision=Decision(request_id, "uniform", "probe-item", 1.0))


def produce(settings: Settings, events: list[Event]) -> None:
    with EventProducer(settings) as producer:
        for _ in producer.send_all(events):
            pass
    assert producer.report.produced == len(events)


def user_state(client: redis_lib.Redis, keys: RedisKeys, users: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Counts, factors and live session of each user, as the job last wrote them."""
    state = {}
    for user in users:
        parts = user_envelopes(client, keys, user)
        factors, session = parts[UserKind.FACTORS], parts[UserKind.SESSION]
        state[user] = {
            "counts": parts[UserKind.COUNTS].payload,  # type: ignore[union-attr]
            "factors": None if factors is None else factors.payload,
            "session": {} if session is None else session.payload,
        }
    return state


def parallelism_of(cluster: FlinkCluster, job_id: str) -> set[int]:
    """Parallelism of the job's keyed operators (the sources follow the default too)."""
    vertices = httpx.get(f"{cluster.rest_url}/jobs/{job_id}", timeout=5).json()["vertices"]
    return {v["parallelism"] for v in vertices}


def wait_for(check: Callable[[], str | None], what: str, log: Path, timeout_s: float = 180) -> None:
    """Poll ``check`` (None = done, else what differs) until done; fail with the difference and the log."""
    deadline = time.monotonic() + timeout_s
    while (difference := check()) is not None:
        assert time.monotonic() < deadline, (
            f"{what}: not reached in {timeout_s:.0f}s: {difference}\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
