"""The decisions fast path answers what the FastAPI route answers (and leaves the rest to it); impressions are
handed to the producer in batches, never after an event produced later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from config import Settings
from schemas.events import Event, EventType
from schemas.redis_keys import Envelope
from serving import create_app
from serving.collector import Collector
from serving.decisions import Decider, DecisionPolicy
from serving.metrics import Metrics, MetricsMiddleware
from serving.models import DecisionRequest, DecisionResponse
from serving.routes import Services

T0 = 1_700_000_000_000
JSON = {"Content-Type": "application/json"}
#: A content type FastAPI reads as JSON but the fast path leaves to it.
SLOW = {"Content-Type": "application/json; charset=utf-8"}


class TableStore:
    """The decider's one read: a Thompson-sampling arm table in the global scope (none when ``empty``)."""

    def __init__(self, empty: bool = False) -> None:
        arms = {"a": [30.0, 70.0], "b": [50.0, 50.0], "c": [5.0, 95.0]}
        self.envelope = None if empty else Envelope({"policy": "ts", "scope": "global", "arms": arms}, T0, T0, "v7")

    async def bandits(self, policy: str, scope_keys: Sequence[str]) -> list[Envelope | None]:
        return [self.envelope if key == "global" else None for key in scope_keys]


class ImpressionLog:
    """The collector's one call on the decision path: the impression, queued."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send_nowait(self, event: Event | Callable[[], Event], on_outcome: Callable[[str], None]) -> None:
        self.events.append(event if isinstance(event, Event) else event())
        on_outcome("delivered")


def _app(api_keys: str | None = None, empty: bool = False) -> tuple[Any, ImpressionLog, Decider]:
    settings = Settings(serving_api_keys=SecretStr(api_keys) if api_keys else None)
    app = create_app(settings)
    metrics: Metrics = next(m.kwargs["metrics"] for m in app.user_middleware if m.cls is MetricsMiddleware)
    decider = Decider(TableStore(empty), DecisionPolicy(control_share=0.0))  # type: ignore[arg-type]
    log = ImpressionLog()
    app.state.services = Services(settings=settings, store=None, recommender=None,  # type: ignore[arg-type]
                                  decider=decider, collector=log, metrics=metrics)  # type: ignore[arg-type]
    return app, log, decider


def _post(app: Any, requests: list[tuple[bytes, dict[str, str]]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [await client.post("/v1/decisions", content=body, headers=headers) for body, headers in requests]

    return asyncio.run(run())


def _fast_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Bodies the fast path validated (it is the only caller of ``model_validate_json``)."""
    calls: list[bytes] = []
    validate = DecisionRequest.model_validate_json

    def spy(body: bytes) -> DecisionRequest:
        calls.append(body)
        return validate(body)

    monkeypatch.setattr("serving.decision_fastpath.DecisionRequest.model_validate_json", spy)
    return calls


def test_the_fast_path_answers_what_the_route_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fast_path_calls(monkeypatch)
    app, log, decider = _app()
    body = b'{"user_id": "u1", "decision_point": "home", "context": {"segment": "men"}}'
    fast, slow = _post(app, [(body, JSON), (body, SLOW)])
    assert calls == [body]  # the first only
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["content-type"] == slow.headers["content-type"] == "application/json"
    a, b = DecisionResponse.model_validate_json(fast.content), DecisionResponse.model_validate_json(slow.content)
    assert list(fast.json()) == list(slow.json()) == list(DecisionResponse.model_fields)
    assert a.request_id != b.request_id
    assert (a.policy, a.variant, a.scope, a.model_version) == (b.policy, b.variant, b.scope, b.model_version) == (
        "ts", "treatment", "global", "v7")
    # Each impression carries its decision, which its request id recomputes.
    assert [e.decision.request_id for e in log.events if e.decision] == [a.request_id, b.request_id]
    for answer, event in zip((a, b), log.events, strict=True):
        assert event.type is EventType.IMPRESSION and event.item_id == answer.arm and event.user_id == "u1"
        assert event.context["segment"] == "men" and event.context["decision_point"] == "home"
        again = asyncio.run(decider.decide(DecisionRequest(user_id="u1", decision_point="home"), T0,
                                              request_id=answer.request_id))
        assert (again.arm, again.propensity) == (answer.arm, answer.propensity)
    exposition = app.state.services.metrics.render().decode()
    assert 'pulse_serving_request_duration_seconds_count{method="POST",route="/v1/decisions",status="200"} 2.0' \
        in exposition
    assert 'pulse_serving_decisions_total{policy="ts",variant="treatment"} 2.0' in exposition
    assert 'pulse_serving_impressions_total{outcome="delivered"} 2.0' in exposition


@pytest.mark.parametrize("body", [
    b'{"user_id": "u1"}', b'{"user_id": "u/1", "decision_point": "home"}', b'{"user_id": "u1", "decision_point": "h",'
    b' "arms": ["a", "a"]}', b'{"user_id": "u1", "decision_point": "h", "other": 1}', b"not json", b"",
    b'{"user_id": "u1", "decision_point": "h", "context": {"segment": 3}}',
])
def test_invalid_bodies_get_the_routes_400(body: bytes) -> None:
    app, log, _ = _app()
    fast, slow = _post(app, [(body, JSON), (body, SLOW)])
    assert fast.status_code == slow.status_code == 400
    assert fast.json() == slow.json() and fast.json()["error"] == "invalid_request"
    assert log.events == []


def test_decision_errors_use_the_apps_handler() -> None:
    app, log, _ = _app(empty=True)
    body = b'{"user_id": "u1", "decision_point": "home"}'
    fast, slow = _post(app, [(body, JSON), (body, SLOW)])
    assert fast.status_code == slow.status_code == 404
    assert fast.json() == slow.json() and fast.json()["error"] == "no_arms"
    assert log.events == []


def test_api_keys_apply_to_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _fast_path_calls(monkeypatch)
    app, log, _ = _app(api_keys="admin-k, read:read-k, publishable:pub-k")
    body = b'{"user_id": "u1", "decision_point": "home"}'
    missing, publishable, unknown, read = _post(app, [
        (body, JSON), (body, {**JSON, "Authorization": "Bearer pub-k"}),
        (body, {**JSON, "Authorization": "Bearer nope"}), (body, {**JSON, "Authorization": "Bearer read-k"})])
    assert missing.status_code == unknown.status_code == 401 and publishable.status_code == 403
    assert read.status_code == 200 and len(calls) == 1 and len(log.events) == 1


class RecordingProducer:
    """What the collector hands to librdkafka, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.messages: list[dict[str, Any]] = []  # produce_batch's

    def produce_batch(self, topic: str, messages: list[dict[str, Any]]) -> int:
        self.calls.append(("batch", [m["key"] for m in messages]))
        self.messages.extend(messages)
        return len(messages)

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        self.calls.append(("one", [key]))

    def flush(self, timeout: float) -> int:
        return 0

    def poll(self, timeout: float) -> int:
        return 0


def _impression(user: str) -> Event:
    from schemas.events import Decision

    return Event(event_id=f"e-{user}", type=EventType.IMPRESSION, user_id=user, event_time_ms=T0, item_id="a",
                 decision=Decision(f"r{user}", "ts", "a", 0.5))


def _collector_into(producer: RecordingProducer) -> Collector:
    """A collector whose flushes go to ``producer`` (the timer's only when a test calls it)."""
    collector = Collector(Settings(), impression_flush_s=60.0)
    collector._stop.set()
    collector._producer = producer  # type: ignore[assignment]
    return collector


def test_impressions_leave_in_one_batch_before_any_later_event() -> None:
    producer = RecordingProducer()
    collector = _collector_into(producer)
    outcomes: list[str] = []

    async def run() -> None:
        collector.send_nowait(_impression("u1"), outcomes.append)
        collector.send_nowait(_impression("u2"), outcomes.append)
        assert producer.calls == []  # queued, not yet produced
        click = Event(event_id="c1", type=EventType.CLICK, user_id="u1", event_time_ms=T0, item_id="a")
        with pytest.raises(Exception):  # noqa: B017 - nobody acknowledges: the wait times out
            await asyncio.wait_for(collector.send(click), 0.05)
        collector.send_nowait(_impression("u3"), outcomes.append)

    asyncio.run(run())
    assert producer.calls == [("batch", [b"u1", b"u2"]), ("one", [b"u1"])]
    assert collector.close() == 0  # close hands over what is still queued
    assert producer.calls[-1] == ("batch", [b"u3"])


def test_a_full_producer_queue_counts_the_impressions_dropped() -> None:
    class Full(RecordingProducer):
        def produce_batch(self, topic: str, messages: list[dict[str, Any]]) -> int:
            raise BufferError("queue full")

    collector = _collector_into(Full())
    outcomes: list[str] = []
    collector.send_nowait(_impression("u1"), outcomes.append)  # no event loop: handed over at once
    assert outcomes == ["dropped"]


@pytest.mark.parametrize(("change", "reason"), [
    ({"context": {"segment": "\ufeffmen"}}, "bad_id"), ({"item_id": "a" * 300}, "bad_id"),
    ({"event_time_ms": 1000}, "bad_timestamp"), ({"item_id": "bad\x01arm"}, "bad_id"),
    ({"context": {"page": 7}}, "invalid_body"),
])
def test_impressions_get_the_checks_of_a_decoded_event_at_the_flush(
    change: dict[str, Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Queued as they come; at the flush each gets the checks ``encode`` (encode, then decode back) makes and
    the codec's bytes. One that fails them is counted ``invalid`` and logged; the rest of its batch leaves."""
    import dataclasses

    from schemas import DecodeError

    producer = RecordingProducer()
    collector = _collector_into(producer)
    written = producer.messages
    outcomes: list[str] = []
    good, bad = _impression("u1"), dataclasses.replace(_impression("u2"), **change)
    with pytest.raises(DecodeError) as raised:
        collector.encode(bad)
    assert raised.value.reason.value == reason

    async def run() -> None:
        for event in (good, bad, _impression("u3")):
            collector.send_nowait(event, outcomes.append)
        assert written == []  # queued, nothing checked or written yet
        collector.flush_impressions()

    asyncio.run(run())
    assert [m["key"] for m in written] == [b"u1", b"u3"]
    assert written[0]["value"] == collector.encode(good)
    assert outcomes == ["invalid"]
    assert "impression e-u2 not logged: it fails the job's checks" in caplog.text
    collector.close(timeout_s=0.1)


def test_a_decision_whose_impression_would_fail_the_checks_is_a_400_on_both_paths() -> None:
    """The request model refuses it (the impression is checked only after the answer)."""
    app, _, _ = _app()
    settings = app.state.services.settings
    collector = Collector(settings)
    app.state.services.collector = collector
    try:
        body = '{"user_id": "u1", "decision_point": "home", "context": {"segment": "\ufeffmen"}}'.encode()
        fast, slow = _post(app, [(body, JSON), (body, SLOW)])
    finally:
        collector.close(timeout_s=0.1)
    assert fast.status_code == slow.status_code == 400
    assert fast.json() == slow.json() and "byte-order mark" in fast.json()["detail"]


def test_the_timer_flush_writes_a_few_impressions_per_event_loop_step_then_produces_them_together() -> None:
    producer = RecordingProducer()
    collector = _collector_into(producer)
    queued: list[int] = []

    async def run() -> None:
        for n in range(20):
            collector.send_nowait(_impression(f"u{n}"), lambda outcome: None)
        collector._flush_step()
        queued.append(len(collector._impressions))
        while collector._impressions or collector._written:
            await asyncio.sleep(0)
            queued.append(len(collector._impressions))

    asyncio.run(run())
    assert queued[0] == 20 - collector.write_step  # one step's worth written, the rest for later steps
    assert queued[-1] == 0 and len(queued) >= 3
    assert producer.calls == [("batch", [f"u{n}".encode() for n in range(20)])]  # in order, one batch
    collector.close(timeout_s=0.1)
