"""The hot routes answered in the HTTP protocol give, over a real socket, what the app's routes give."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from config import Settings
from serving import create_app
from serving.decisions import Decider, DecisionPolicy
from serving.hot_routes import HotRequest
from serving.metrics import Metrics, MetricsMiddleware
from serving.models import DecisionResponse, Recommendations
from serving.recommendations import Recommender
from serving.routes import Services
from serving.server import running
from tests.unit.serving.test_decision_fastpath import JSON, SLOW, ImpressionLog, TableStore
from tests.unit.serving.test_fastpath import T0, FakeStore

PAIRS = [  # (answered in the protocol, answered by the router: the same request in a non-canonical form)
    ("/v1/users/u1/recommendations", "/v1/users/u1/recommendations?unknown=1"),
    ("/v1/users/u1/recommendations?k=3", "/v1/users/u1/recommendations?k=03"),
    ("/v1/users/cold/recommendations?segment=men", "/v1/users/cold/recommendations?segment=me%6E"),
    ("/v1/users/u1/recommendations?k=5&exclude=i1&exclude=i3&category=c1&session_boost=0.5&max_per_category=2",
     "/v1/users/u1/recommendations?k=5&exclude=i1&exclude=i3&category=c1&session_boost=5e-1&max_per_category=02"),
]
DECISION = b'{"user_id": "u1", "decision_point": "home"}'


@contextlib.asynccontextmanager
async def _no_lifespan(_: Any) -> AsyncIterator[None]:
    yield  # the test sets the services itself


@contextlib.contextmanager
def _served(api_keys: str | None = None, cors: str | None = None, empty: bool = False,
            **config: Any) -> Iterator[tuple[str, FakeStore, ImpressionLog, Metrics]]:
    settings = Settings(serving_api_keys=SecretStr(api_keys) if api_keys else None,
                        serving_cors_origins=cors or "")
    app = create_app(settings)
    app.router.lifespan_context = _no_lifespan
    metrics: Metrics = next(m.kwargs["metrics"] for m in app.user_middleware if m.cls is MetricsMiddleware)
    store, log = FakeStore(), ImpressionLog()
    recommender = Recommender(store, clock_ms=lambda: T0 + 1000)  # type: ignore[arg-type]
    # Tables reused for a minute: the second decision is made without a read (in the protocol's own step).
    decider = Decider(TableStore(empty), DecisionPolicy(control_share=0.0, table_max_age_s=60))  # type: ignore[arg-type]
    app.state.services = Services(settings=settings, store=store, recommender=recommender,  # type: ignore[arg-type]
                                  decider=decider, collector=log, metrics=metrics)  # type: ignore[arg-type]
    with running(app, **config) as url:
        yield url, store, log, metrics


@pytest.fixture
def hot_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kinds of the requests answered in the protocol (``decision now``: without a task)."""
    calls: list[str] = []
    run, decide_now = HotRequest.run, HotRequest.decide_now

    async def spy(self: HotRequest) -> None:
        calls.append(self.kind)
        await run(self)

    def spy_now(self: HotRequest) -> bool:
        answered = decide_now(self)
        if answered:
            calls.append("decision now")
        return answered

    monkeypatch.setattr(HotRequest, "run", spy)
    monkeypatch.setattr(HotRequest, "decide_now", spy_now)
    return calls


def _same_answer(a: httpx.Response, b: httpx.Response) -> None:
    assert a.status_code == b.status_code
    assert a.json().pop("request_id") != b.json().pop("request_id")
    assert {**a.json(), "request_id": ""} == {**b.json(), "request_id": ""}
    for header in ("content-type", "content-length", "x-pulse-prefix", "server"):
        assert a.headers.get(header) == b.headers.get(header)


def test_recommendations_are_answered_in_the_protocol_as_the_route_answers(hot_calls: list[str]) -> None:
    with _served() as (url, _, _, metrics), httpx.Client(base_url=url) as client:
        for hot, routed in PAIRS:
            a, b = client.get(hot), client.get(routed)
            assert a.status_code == 200 and "date" in a.headers
            _same_answer(a, b)
            Recommendations.model_validate_json(a.content)
        exposition = metrics.render().decode()
    assert hot_calls == ["recommendations"] * len(PAIRS)
    route = 'method="GET",route="/v1/users/{user_id}/recommendations"'
    assert f'pulse_serving_request_duration_seconds_count{{{route},status="200"}} {2.0 * len(PAIRS)}' in exposition


def test_decisions_are_answered_in_the_protocol_and_bad_bodies_get_the_routes_400(hot_calls: list[str]) -> None:
    with _served() as (url, _, log, _), httpx.Client(base_url=url) as client:
        fast = client.post("/v1/decisions", content=DECISION, headers=JSON)
        slow = client.post("/v1/decisions", content=DECISION, headers=SLOW)
        now = client.post("/v1/decisions", content=DECISION, headers=JSON)
        bad = client.post("/v1/decisions", content=b'{"user_id": "u1"}', headers=JSON)
        bad_routed = client.post("/v1/decisions", content=b'{"user_id": "u1"}', headers=SLOW)
    assert hot_calls == ["decision", "decision now", "decision"]  # the bad one is replayed to the app
    assert fast.status_code == slow.status_code == now.status_code == 200
    for answer in (fast, slow, now):
        assert answer.headers["content-type"] == "application/json"
    a, b, c = (DecisionResponse.model_validate_json(r.content) for r in (fast, slow, now))
    assert (a.policy, a.scope, a.model_version) == (b.policy, b.scope, b.model_version) == (
        c.policy, c.scope, c.model_version) == ("ts", "global", "v7")
    assert [e.decision.request_id for e in log.events if e.decision] == [a.request_id, b.request_id, c.request_id]
    assert bad.status_code == bad_routed.status_code == 400 and bad.json() == bad_routed.json()


def test_errors_and_keys_get_the_apps_answers(hot_calls: list[str]) -> None:
    path = "/v1/users/u1/recommendations"
    with _served(api_keys="k1", empty=True) as (url, store, _, metrics), httpx.Client(base_url=url) as client:
        assert client.get(path).status_code == 401  # no key: uvicorn's path, the route's 401
        assert client.get(path, headers={"Authorization": "Bearer k2"}).status_code == 401
        key = {"Authorization": "Bearer k1"}
        assert client.get(path, headers=key).status_code == 200
        no_arms = client.post("/v1/decisions", content=DECISION, headers={**JSON, **key})
        store.down = True
        down = client.get(path, headers=key)
        after = client.get(path, headers=key)  # the connection still serves
        exposition = metrics.render().decode()
    assert no_arms.status_code == 404 and no_arms.json()["error"] == "no_arms"
    assert down.status_code == after.status_code == 503 and down.json()["error"] == "redis_unavailable"
    assert hot_calls == ["recommendations", "decision", "recommendations", "recommendations"]
    route = 'method="GET",route="/v1/users/{user_id}/recommendations"'
    assert f'pulse_serving_request_duration_seconds_count{{{route},status="503"}} 2.0' in exposition
    assert 'route="/v1/decisions",status="404"} 1.0' in exposition


def test_a_browsers_request_under_cors_gets_the_cors_headers(hot_calls: list[str]) -> None:
    with _served(cors="https://shop.example") as (url, _, _, _), httpx.Client(base_url=url) as client:
        browser = client.get("/v1/users/u1/recommendations", headers={"Origin": "https://shop.example"})
        plain = client.get("/v1/users/u1/recommendations")
    assert browser.status_code == plain.status_code == 200
    assert browser.headers["access-control-allow-origin"] == "https://shop.example"
    assert "access-control-allow-origin" not in plain.headers
    assert hot_calls == ["recommendations"]


def _raw(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_pipelined_requests_are_answered_in_order_and_http_1_0_closes() -> None:
    get = b"GET /v1/users/u1/recommendations?k=%d HTTP/1.1\r\nHost: t\r\n\r\n"
    with _served() as (url, _, _, _):
        last = b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        pipelined = _raw(url, get % 1 + get % 2 + get % 3 + last)
        old = _raw(url, b"GET /v1/users/u1/recommendations?k=2 HTTP/1.0\r\n\r\n")
    answers = pipelined.split(b"HTTP/1.1 200 OK\r\n")[1:]
    assert len(answers) == 4
    assert [a.count(b'"item_id"') for a in answers[:3]] == [1, 2, 3]
    assert old.startswith(b"HTTP/1.1 200 OK\r\n") and b"connection: close\r\n" in old and old.count(b'"item_id"') == 2


def test_a_keep_alive_connection_closes_once_idle_for_the_whole_timeout_after_its_last_response() -> None:
    get = b"GET /v1/users/u1/recommendations?k=1 HTTP/1.1\r\nHost: t\r\n\r\n"
    with _served(timeout_keep_alive=1) as (url, _, _, _):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            answers = []
            for _ in range(3):  # 1.2 s in all, never 1 s idle: the connection stays open
                sock.sendall(get)
                answers.append(sock.recv(65536))
                time.sleep(0.6)
            time.sleep(1.5)  # idle past the timeout: the server closes it
            closed = sock.recv(65536)
    assert all(a.startswith(b"HTTP/1.1 200 OK\r\n") and b'"item_id"' in a for a in answers)
    assert closed == b""
