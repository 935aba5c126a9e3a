"""Key scopes on every /v1 route (401 without a known key, 403 without the scope), CORS, and batch intake logic."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from config import Settings
from schemas import EventCodec
from serving import create_app
from serving.collector import CollectorUnavailableError, Delivered
from serving.events import InvalidBatchError, collect_batch, parse_batch
from serving.metrics import Metrics, MetricsMiddleware
from serving.recommendations import Recommender
from serving.routes import Services
from tests.unit.serving.test_fastpath import T0, FakeStore

KEYS = "admin-k, read:read-k, publishable:pub-k"
#: Every /v1 route, with a request that passes authentication and then fails validation (400): a 400
#: shows the key was let through without touching Kafka or Redis.
ROUTES: dict[tuple[str, str], tuple[str, bytes | None, str]] = {
    ("GET", "/v1/users/{user_id}/recommendations"): ("/v1/users/u1/recommendations?k=0", None, "read"),
    ("GET", "/v1/users/{user_id}/session"): ("/v1/users/bad%7Bid/session", None, "read"),
    ("POST", "/v1/decisions"): ("/v1/decisions", b"{}", "read"),
    ("POST", "/v1/events"): ("/v1/events", b"{}", "events"),
    ("POST", "/v1/events:batch"): ("/v1/events:batch", b"not json", "events"),
    ("DELETE", "/v1/users/{user_id}"): ("/v1/users/bad%7Bid", None, "admin"),
    ("GET", "/v1/users/{user_id}/blocks"): ("/v1/users/bad%7Bid/blocks", None, "read"),
    ("POST", "/v1/users/{user_id}/blocks"): ("/v1/users/u1/blocks", b"{}", "events"),
    ("DELETE", "/v1/users/{user_id}/blocks"): ("/v1/users/u1/blocks", b'{"item_ids": []}', "events"),
    ("GET", "/v1/items/{item_id}/similar"): ("/v1/items/i1/similar?k=0", None, "read"),
    ("GET", "/v1/experiments/{name}"): ("/v1/experiments/home?outcome=views", None, "read"),
}
#: Which scope each kind of key has.
HAS = {"admin-k": {"read", "events", "admin"}, "read-k": {"read"}, "pub-k": {"events"}}


def _client(**settings: Any) -> httpx.AsyncClient:
    config = Settings(**settings)
    app = create_app(config)
    metrics: Metrics = next(m.kwargs["metrics"] for m in app.user_middleware if m.cls is MetricsMiddleware)
    recommender = Recommender(FakeStore(), clock_ms=lambda: T0 + 1000)  # type: ignore[arg-type]
    app.state.services = Services(settings=config, store=FakeStore(), recommender=recommender,  # type: ignore[arg-type]
                                  decider=None, collector=None, metrics=metrics)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _send(requests: list[tuple[str, str, bytes | None, dict[str, str]]], **settings: Any) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with _client(**settings) as client:
            return [await client.request(method, url, content=body, headers=headers)
                    for method, url, body, headers in requests]

    return asyncio.run(run())


def test_every_v1_route_is_in_the_scope_table() -> None:
    paths = create_app(Settings()).openapi()["paths"]
    served = {(method.upper(), path) for path, operations in paths.items() if path.startswith("/v1")
              for method in operations}
    assert served == set(ROUTES)


@pytest.mark.parametrize("route", sorted(ROUTES))
def test_each_route_answers_401_without_a_known_key_and_403_without_its_scope(route: tuple[str, str]) -> None:
    method = route[0]
    url, body, scope = ROUTES[route]
    requests = [(method, url, body, {}), (method, url, body, {"Authorization": "Bearer not-a-key"}),
                (method, url, body, {"Authorization": "Bearer read:read-k"})]
    requests += [(method, url, body, {"Authorization": f"Bearer {key}"}) for key in HAS]
    missing, unknown, prefixed, *by_key = _send(requests, serving_api_keys=SecretStr(KEYS))
    assert [missing.status_code, unknown.status_code, prefixed.status_code] == [401, 401, 401]
    assert missing.json()["error"] == "unauthorized" and missing.headers["www-authenticate"] == "Bearer"
    for key, response in zip(HAS, by_key, strict=True):
        want = 400 if scope in HAS[key] else 403
        assert response.status_code == want, (key, response.text)
        if want == 403:
            assert response.json() == {"error": "forbidden", "detail": response.json()["detail"]}
            assert scope in response.json()["detail"]


def test_without_keys_every_route_is_open() -> None:
    responses = _send([(m, url, body, {}) for (m, _), (url, body, _) in ROUTES.items()])
    assert [r.status_code for r in responses] == [400] * len(ROUTES)


def test_only_a_publishable_key_may_come_in_the_query_and_only_on_event_routes() -> None:
    responses = _send([
        ("POST", "/v1/events:batch?key=pub-k", b"not json", {}),
        ("POST", "/v1/events?key=pub-k", b"{}", {}),
        ("POST", "/v1/events:batch?key=admin-k", b"not json", {}),  # admin keys stay out of URLs
        ("POST", "/v1/events:batch?key=nope", b"not json", {}),
        ("GET", "/v1/users/u1/recommendations?key=read-k", None, {}),
    ], serving_api_keys=SecretStr(KEYS))
    assert [r.status_code for r in responses] == [400, 400, 401, 401, 401]


def test_the_fast_path_needs_the_read_scope() -> None:
    path = "/v1/users/u1/recommendations"
    read, admin, publishable = _send([("GET", path, None, {"Authorization": f"Bearer {k}"})
                                      for k in ("read-k", "admin-k", "pub-k")], serving_api_keys=SecretStr(KEYS))
    assert read.status_code == admin.status_code == 200 and read.json()["request_id"]
    assert publishable.status_code == 403


def test_cors_preflight_for_configured_origins_only() -> None:
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed, other = _send([
        ("OPTIONS", "/v1/events:batch", None, {"Origin": "https://shop.example", **preflight}),
        ("OPTIONS", "/v1/events:batch", None, {"Origin": "https://evil.example", **preflight}),
    ], serving_cors_origins="https://shop.example", serving_api_keys=SecretStr(KEYS))
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    (plain,) = _send([("GET", "/v1/users/u1/recommendations", None, {"Origin": "https://shop.example"})])
    assert "access-control-allow-origin" not in plain.headers  # no origins configured


@pytest.mark.parametrize(("body", "problem"), [
    (b"[1]", "must be"), (b'{"events": []}', "no events"), (b'{"events": {}}', "must be"),
    (b'{"events": [], "x": 1}', "must be"), (b"\xff", "not JSON"), (b'{"events": [1, 2, 3, 4]}', "at most 3"),
])
def test_parse_batch_refuses_what_is_not_a_batch(body: bytes, problem: str) -> None:
    with pytest.raises(InvalidBatchError, match=problem):
        parse_batch(body, 3)


class StubCollector:
    """The collector's two calls collect_batch makes: the real encoding, and a broker that fails some users."""

    def __init__(self, failing_user: str) -> None:
        self.codec = EventCodec()
        self.failing_user = failing_user
        self.sent: list[str] = []

    def encode(self, event: Any) -> bytes:
        from serving.collector import Collector

        return Collector.encode(self, event)  # type: ignore[arg-type]

    async def send_many(self, items: list[tuple[str, bytes]]) -> list[Delivered | CollectorUnavailableError]:
        self.sent += [key for key, _ in items]
        return [CollectorUnavailableError("broker did not acknowledge") if key == self.failing_user
                else Delivered("events", 0, n) for n, (key, _) in enumerate(items)]


def test_collect_batch_reports_each_event_in_order() -> None:
    raw = [
        {"type": "view", "user_id": "u1", "item_id": "i1", "request_id": "r1"},
        {"type": "view", "user_id": "u1"},  # an item event without item_id: the job's check
        {"type": "teleport", "user_id": "u1"},
        {"type": "click", "user_id": "down", "item_id": "i2"},
        "not an object",
        {"type": "rating", "user_id": "u2", "item_id": "i3", "value": 4.0},
    ]
    collector = StubCollector(failing_user="down")
    result = asyncio.run(collect_batch(collector, raw, T0))  # type: ignore[arg-type]
    statuses = [(r.index, r.status) for r in result.results]
    assert statuses == [(0, "accepted"), (1, "rejected"), (2, "rejected"), (3, "failed"), (4, "rejected"),
                        (5, "accepted")]
    assert (result.accepted, result.rejected, result.failed) == (2, 3, 1)
    assert collector.sent == ["u1", "down", "u2"]  # rejected events never reach the broker
    reasons = {r.index: r.error for r in result.results if r.error}
    assert reasons[1] == "missing_field" and reasons[2] == reasons[4] == "invalid_request"
    assert reasons[3] == "kafka_unavailable" and result.results[3].event_id
    assert all(r.detail for r in result.results if r.error)


def test_the_console_page_is_open_and_its_data_needs_a_read_or_admin_key() -> None:
    url = "/v1/console/state?user_id=u1&k=0"  # k=0: a 400 once the key is let through
    responses = _send([("GET", "/console", None, {}), ("GET", url, None, {}),
                       *(("GET", url, None, {"Authorization": f"Bearer {key}"}) for key in HAS)],
                      serving_api_keys=SecretStr(KEYS))
    page, missing, admin, read, publishable = responses
    assert page.status_code == 200 and "Pulse console" in page.text and page.headers["content-type"].startswith(
        "text/html")
    assert [missing.status_code, admin.status_code, read.status_code, publishable.status_code] == [401, 400, 400, 403]
