"""What makes a decision cheap keeps its answers: impressions written directly are the codec's bytes, arm
tables are reused for a bounded time (one read at a time), and the path ahead of the middleware leaves
to the stack every request it would have treated differently (CORS, body limit, content type)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import EventCodec
from schemas.events import Decision, Event, EventType
from schemas.redis_keys import Envelope
from serving.decisions import Decider, DecisionPolicy
from serving.impressions import DirectEventWriter
from serving.models import DecisionRequest
from tests.unit.serving.test_decision_fastpath import JSON, T0, _app, _post

CODEC = EventCodec()
WRITER = DirectEventWriter(CODEC)
_TEXT = st.text(min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(event_id=_TEXT, event_type=st.sampled_from(list(EventType)), user_id=_TEXT,
       item_id=st.none() | _TEXT, value=st.none() | st.floats(allow_nan=False),
       event_time_ms=st.integers(-(2**63), 2**63 - 1), context=st.dictionaries(st.text(max_size=20), _TEXT, max_size=5),
       decision=st.none() | st.builds(Decision, _TEXT, _TEXT, _TEXT, st.floats(0.0, 1.0, exclude_min=True)),
       category=st.none() | _TEXT)
def test_the_direct_writer_writes_the_codecs_bytes(event_id: str, event_type: EventType, user_id: str,
                                                   item_id: str | None, value: float | None, event_time_ms: int,
                                                   context: dict[str, str], decision: Decision | None,
                                                   category: str | None) -> None:
    event = Event(event_id, event_type, user_id, event_time_ms, item_id, value, context, decision, category)
    assert WRITER.direct
    assert WRITER.encode(event) == CODEC.encode(event)


def test_an_older_writer_version_is_written_directly_too() -> None:
    old = EventCodec(writer_version=1)
    writer = DirectEventWriter(old)
    event = Event("e1", EventType.IMPRESSION, "u1", T0, "a", None, {"k": "v"}, Decision("r1", "ts", "a", 0.5))
    assert writer.direct and writer.encode(event) == old.encode(event) != CODEC.encode(event)
    with pytest.raises(ValueError, match="no event type 'block'"):
        writer.encode(Event("e2", EventType.BLOCK, "u1", T0, "i1"))


def test_the_direct_writer_leaves_another_schema_to_the_codec() -> None:
    _, schema = CODEC.registry.latest(CODEC.subject)

    class NewerRegistry:
        """The writer schema has one field more."""

        def writer_schema(self, schema_id: int) -> dict[str, Any]:
            return {**schema, "fields": [*schema["fields"], {"name": "extra", "type": "string"}]}

    class NewerCodec:
        subject, schema_id, registry, encode = CODEC.subject, CODEC.schema_id, NewerRegistry(), CODEC.encode

    writer = DirectEventWriter(NewerCodec())  # type: ignore[arg-type]
    event = Event("e1", EventType.CLICK, "u1", T0, "a")
    assert not writer.direct and writer.encode(event) == CODEC.encode(event)


class CountingStore:
    """Arm tables by version; counts the reads, and can hold them until released."""

    def __init__(self) -> None:
        self.reads = 0
        self.version = 1
        self.gate: asyncio.Event | None = None

    async def bandits(self, policy: str, scope_keys: Sequence[str]) -> list[Envelope | None]:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        arms = {"a": [30.0, 70.0], "b": [50.0, 50.0]} if self.version == 1 else {"c": [1.0, 1.0]}
        envelope = Envelope({"policy": "ts", "scope": "global", "arms": arms}, T0, T0, f"v{self.version}")
        return [envelope if key == "global" else None for key in scope_keys]


def _decide(decider: Decider, request_id: str | None = None) -> Any:
    return decider.decide(DecisionRequest(user_id="u1", decision_point="home"), T0, request_id=request_id)


def test_an_arm_table_is_reused_for_its_max_age_and_read_again_after() -> None:
    store = CountingStore()
    decider = Decider(store, DecisionPolicy(control_share=0.0, table_max_age_s=0.2))  # type: ignore[arg-type]

    async def run() -> None:
        first = await _decide(decider)
        store.version = 2
        again = await _decide(decider)
        assert store.reads == 1 and first.model_version == again.model_version == "v1"
        replayed = await _decide(decider, request_id=first.request_id)  # a replay reads the table
        assert store.reads == 2 and replayed.model_version == "v2"
        await asyncio.sleep(0.25)
        later = await _decide(decider)
        assert store.reads == 3 and later.model_version == "v2" and later.arm == "c"

    asyncio.run(run())


def test_decisions_that_find_the_table_expired_share_one_read() -> None:
    store = CountingStore()
    decider = Decider(store, DecisionPolicy(control_share=0.0, table_max_age_s=60.0))  # type: ignore[arg-type]

    async def run() -> None:
        store.gate = asyncio.Event()
        pending = [asyncio.ensure_future(_decide(decider)) for _ in range(5)]
        await asyncio.sleep(0.01)
        pending[0].cancel()  # a caller that goes away does not cancel the read the others wait for
        store.gate.set()
        answers = await asyncio.gather(*pending[1:])
        assert store.reads == 1 and {answer.model_version for answer in answers} == {"v1"}

    asyncio.run(run())


def test_without_a_max_age_every_decision_reads() -> None:
    store = CountingStore()
    decider = Decider(store, DecisionPolicy(control_share=0.0))  # type: ignore[arg-type]

    async def run() -> None:
        for _ in range(3):
            await _decide(decider)

    asyncio.run(run())
    assert store.reads == 3


BODY = b'{"user_id": "u1", "decision_point": "home"}'


@pytest.mark.parametrize(("body", "headers", "status"), [
    (BODY + b" " * 70 * 1024, JSON, 413),  # over the body limit: the stack's 413
    (BODY, {"Content-Type": "text/plain"}, 400),  # not JSON: the route's own answer
])
def test_what_the_fast_path_does_not_take_gets_the_stacks_answer(body: bytes, headers: dict[str, str],
                                                                 status: int) -> None:
    app, log, _ = _app()
    (response,) = _post(app, [(body, headers)])
    assert response.status_code == status and response.json()["error"] in {"body_too_large", "invalid_request"}
    assert log.events == []


def test_a_browsers_decision_gets_the_cors_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_SERVING_CORS_ORIGINS", "https://shop.example")
    app, log, _ = _app()
    origin = {**JSON, "Origin": "https://shop.example"}
    browser, server = _post(app, [(BODY, origin), (BODY, JSON)])
    assert browser.status_code == server.status_code == 200 and len(log.events) == 2
    assert browser.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in server.headers


def test_an_unexpected_error_is_the_apps_500_and_is_measured() -> None:
    app, _, decider = _app()

    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    decider.decide = broken  # type: ignore[method-assign]
    (response,) = _post(app, [(BODY, JSON)])
    assert response.status_code == 500 and response.json() == {"error": "internal", "detail": "internal error (logged)"}
    exposition = app.state.services.metrics.render().decode()
    assert 'pulse_serving_request_duration_seconds_count{method="POST",route="/v1/decisions",status="500"} 1.0' \
        in exposition
