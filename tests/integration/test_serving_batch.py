"""``POST /v1/events:batch`` against a real broker that is restarted mid-way: nothing lost, nothing doubled.

10,000 events in 100 requests of 100 (four clients at once), 1% malformed in eight different
ways. While the requests run, the broker (this test's own) is stopped and started again. Every
request is answered once the broker acknowledged its valid events, so: 9,900 accepted, exactly
those 9,900 on the topic (once each), the 100 malformed ones reported with a reason, none failed.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer

from config import REPO_ROOT, Settings
from infra.local.kafka import KafkaBroker
from infra.local.process import ServiceError, free_port
from producers.topics import ensure_topics
from schemas import EventCodec
from serving import create_app
from serving.server import running
from tests.conftest import isolated_settings
from tests.services import start_on_free_ports

REQUESTS, PER_REQUEST, CLIENTS = 100, 100, 4
RESTART_AFTER = 30  # requests answered before the broker is restarted
PUBLISHABLE = "pk-batch-test"
#: Malformed events, one per request, with the reason the answer must give.
MALFORMED: list[tuple[Any, str]] = [
    ({"type": "view", "item_id": "i1"}, "invalid_request"),  # no user_id
    ({"type": "teleport", "user_id": "u1"}, "invalid_request"),  # unknown type
    ({"type": "view", "user_id": "u1"}, "missing_field"),  # item event without item_id
    ({"type": "rating", "user_id": "u1", "item_id": "i1"}, "missing_field"),  # rating without value
    ({"type": "view", "user_id": "a/b", "item_id": "i1"}, "invalid_request"),  # id charset
    ({"type": "view", "user_id": "u1", "item_id": "i1", "event_time_ms": 1_700_000_000}, "invalid_request"),  # s
    ({"type": "rating", "user_id": "u1", "item_id": "i1", "value": "4"}, "invalid_request"),  # not a number
    ("not an event", "invalid_request"),
]


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker of this test alone: it restarts it."""
    home = tmp_path / "services"
    home.mkdir()
    (home / "jars").symlink_to(REPO_ROOT / ".local" / "jars", target_is_directory=True)
    broker = start_on_free_ports(lambda: KafkaBroker(home, free_port(), free_port()), timeout_s=120)
    try:
        yield broker
    finally:
        broker.process.stop()


def _batches() -> tuple[list[list[Any]], dict[str, str], list[str]]:
    """The request bodies, the valid events' ids (-> request id they carry), and the malformed reasons in order."""
    bodies, valid, reasons = [], {}, []
    for r in range(REQUESTS):
        events: list[Any] = []
        for i in range(PER_REQUEST - 1):
            event_id = f"e{r}-{i}-{uuid.uuid4().hex[:6]}"
            valid[event_id] = f"req{r}"
            events.append({"event_id": event_id, "type": "view", "user_id": f"u{(r * 7 + i) % 500}",
                           "item_id": f"i{i % 40}", "request_id": f"req{r}"})
        bad, reason = MALFORMED[r % len(MALFORMED)]
        events.insert(r % PER_REQUEST, bad)
        reasons.append(reason)
        bodies.append(events)
    return bodies, valid, reasons


def _restart(broker: KafkaBroker) -> float:
    stopped = time.monotonic()
    broker.process.stop()
    try:
        broker.start(timeout_s=120)
    except ServiceError:  # the fresh JVM sometimes ends at once (see tests/reliability/test_faults.py); again
        broker.start(timeout_s=120)
    return time.monotonic() - stopped


def _topic(settings: Settings, expected: int, timeout_s: float = 120.0) -> list[Any]:
    codec = EventCodec()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic_events])
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if not msg.error():
                    found.append(codec.decode(msg.value()))
            if len(found) >= expected:  # then drain a little more: a duplicate would show up
                for msg in consumer.consume(1000, timeout=3.0):
                    if not msg.error():
                        found.append(codec.decode(msg.value()))
                break
    finally:
        consumer.close()
    return found


def test_batches_survive_a_broker_restart_with_nothing_lost_or_doubled(own_broker: KafkaBroker,
                                                                      redis_url: str) -> None:
    settings = isolated_settings(own_broker.bootstrap, redis_url, serving_api_keys=f"publishable:{PUBLISHABLE}",
                                 serving_kafka_timeout_s=120.0, serving_batch_max_events=PER_REQUEST)
    ensure_topics(settings, [settings.topic_events])
    bodies, valid, reasons = _batches()
    answers: dict[int, dict[str, Any]] = {}
    waited: dict[int, float] = {}
    errors: list[BaseException] = []

    def client(indexes: list[int], base: str) -> None:
        try:
            with httpx.Client(base_url=base, timeout=200.0) as http:
                for n in indexes:
                    started = time.monotonic()
                    # Half as JSON with the key in a header, half as a beacon sends it: text/plain, key in the URL.
                    if n % 2:
                        response = http.post("/v1/events:batch", json={"events": bodies[n]},
                                             headers={"Authorization": f"Bearer {PUBLISHABLE}"})
                    else:
                        response = http.post(f"/v1/events:batch?key={PUBLISHABLE}",
                                             content=httpx.Request("POST", "/", json={"events": bodies[n]}).content,
                                             headers={"Content-Type": "text/plain;charset=UTF-8"})
                    assert response.status_code == 200, response.text
                    waited[n] = time.monotonic() - started
                    answers[n] = response.json()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    with running(create_app(settings)) as base:
        threads = [threading.Thread(target=client, args=(list(range(c, REQUESTS, CLIENTS)), base)) for c in
                   range(CLIENTS)]
        for thread in threads:
            thread.start()
        while len(answers) < RESTART_AFTER and not errors:
            time.sleep(0.05)
        at = len(answers)
        down_s = _restart(own_broker)
        for thread in threads:
            thread.join(timeout=600)
    assert not errors, errors[0]
    assert len(answers) == REQUESTS

    results = [result for n in range(REQUESTS) for result in answers[n]["results"]]
    statuses = Counter(result["status"] for result in results)
    rejected = [(n, result) for n in range(REQUESTS) for result in answers[n]["results"]
                if result["status"] == "rejected"]
    assert statuses == {"accepted": 9_900, "rejected": 100}, statuses
    assert [result["error"] for _, result in rejected] == reasons  # one per request, the expected reason
    assert all(result["index"] == n % PER_REQUEST and result["detail"] for n, result in rejected)
    assert sum(a["accepted"] for a in answers.values()) == 9_900 and all(a["failed"] == 0 for a in answers.values())

    on_topic = _topic(settings, len(valid))
    ids = Counter(event.event_id for event in on_topic)
    lost = set(valid) - set(ids)
    doubled = {event_id: n for event_id, n in ids.items() if n > 1}
    longest = max(waited.values())
    print(f"\nevents:batch: {REQUESTS} requests x {PER_REQUEST}, broker restarted after {at} answers "
          f"(down {down_s:.1f} s, longest answer {longest:.1f} s); on the topic {len(on_topic):,}, lost {len(lost)}, "
          f"doubled {len(doubled)}, reported malformed {len(rejected)}")
    assert longest > 2.0, "no request was in flight while the broker was down"
    assert not lost and not doubled and len(on_topic) == 9_900
    assert all(event.context["request_id"] == valid[event.event_id] for event in on_topic)
