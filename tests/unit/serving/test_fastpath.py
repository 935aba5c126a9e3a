"""The recommendations fast path answers exactly what the FastAPI route answers, and leaves the rest to it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from config import Settings
from schemas.redis_keys import Envelope, RedisKeys
from serving import create_app
from serving.fastpath import parse_query
from serving.metrics import Metrics, MetricsMiddleware
from serving.models import Recommendations
from serving.recommendations import Recommender
from serving.routes import Services
from serving.store import StoreUnavailableError

T0 = 1_700_000_000_000


class FakeStore:
    """The two reads the recommender makes, from dicts; ``down`` makes them fail like Redis being away."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.keys = RedisKeys("pulse")  # the prefix answers name (x-pulse-prefix)
        recs = {"items": [[f"i{i}", 5.0 - i / 10] for i in range(30)], "global_mean": 3.5}
        self.recs = {"u1": Envelope(recs, T0, T0 + 5, "mf-v1")}
        self.sessions = {"u1": Envelope({"open": True, "recent_items": ["i0", "i2"]}, T0, T0, "mf-v1")}
        pop = {"items": [["p1", 3.0], ["p2", 2.0]], "at_ms": T0, "half_life_ms": 0}
        self.pop = {"*": Envelope(pop, T0, T0, "mf-v1")}

    async def user_view(self, user_id: str, top: int | None = None) -> tuple[Envelope | None, Envelope | None]:
        self.calls += 1
        if self.down:
            raise StoreUnavailableError("Redis did not answer (ConnectionError)")
        return self.recs.get(user_id), self.sessions.get(user_id)

    async def popularity(self, segments: list[str]) -> list[Envelope | None]:
        return [self.pop.get(s) for s in segments]


def _client(api_keys: str | None = None) -> tuple[httpx.AsyncClient, FakeStore, Metrics]:
    settings = Settings(serving_api_keys=SecretStr(api_keys) if api_keys else None)
    app = create_app(settings)
    store = FakeStore()
    metrics: Metrics = next(m.kwargs["metrics"] for m in app.user_middleware if m.cls is MetricsMiddleware)
    recommender = Recommender(store, clock_ms=lambda: T0 + 1000)  # type: ignore[arg-type]
    app.state.services = Services(settings=settings, store=store, recommender=recommender,  # type: ignore[arg-type]
                                  decider=None, collector=None, metrics=metrics)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test"), store, metrics


def _both(fast: str, slow: str, api_keys: str | None = None,
          headers: dict[str, str] | None = None) -> tuple[httpx.Response, httpx.Response]:
    async def run() -> tuple[httpx.Response, httpx.Response]:
        client, _, _ = _client(api_keys)
        async with client:
            return await client.get(fast, headers=headers), await client.get(slow, headers=headers)

    return asyncio.run(run())


@pytest.mark.parametrize(("fast", "slow"), [
    ("/v1/users/u1/recommendations", "/v1/users/u1/recommendations?unknown=1"),
    ("/v1/users/u1/recommendations?k=3", "/v1/users/u1/recommendations?k=03"),
    ("/v1/users/u1/recommendations?k=5&exclude_seen=false", "/v1/users/u1/recommendations?k=5&exclude_seen=no"),
    ("/v1/users/cold/recommendations?segment=men", "/v1/users/cold/recommendations?segment=me%6E"),
    ("/v1/users/u1/recommendations?k=1000", "/v1/users/u1/recommendations?k=1000&k=1000"),
    ("/v1/users/u1/recommendations?k=5&exclude=i1&exclude=i3&category=c1&session_boost=0.5&max_per_category=2",
     "/v1/users/u1/recommendations?k=5&exclude=i1&exclude=i3&category=c1&session_boost=5e-1&max_per_category=02"),
    ("/v1/users/u1/recommendations?exclude_category=c2&exclude=i4&session_boost=100",
     "/v1/users/u1/recommendations?exclude_category=c2&exclude=i4&session_boost=100.0"),
])
def test_the_fast_path_answers_what_the_route_answers(fast: str, slow: str) -> None:
    a, b = _both(fast, slow)
    assert a.status_code == b.status_code == 200
    assert a.json().pop("request_id") != b.json().pop("request_id")  # each answer is named afresh...
    assert {**a.json(), "request_id": ""} == {**b.json(), "request_id": ""}  # ...and is otherwise the same
    assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
    assert a.headers["content-length"] == b.headers["content-length"]
    Recommendations.model_validate_json(a.content)  # what the OpenAPI schema documents


def test_seen_items_are_excluded_and_k_respected() -> None:
    a, _ = _both("/v1/users/u1/recommendations?k=3", "/v1/users/u1/recommendations?k=3")
    body = a.json()
    assert [i["item_id"] for i in body["items"]] == ["i1", "i3", "i4"]
    assert body["source"] == "model" and body["freshness_ms"] == 1000 and body["degraded"] is False


def test_the_prefix_header_names_the_prefix_read_when_a_promote_lands_during_the_read() -> None:
    """``pulse model promote`` switches ``store.keys`` while a read is under way: the answer names the prefix
    whose values it holds (read after the answer, the header named the new prefix over the old values)."""

    class SwitchingStore(FakeStore):
        async def user_view(self, user_id: str, top: int | None = None) -> tuple[Envelope | None, Envelope | None]:
            found = await super().user_view(user_id, top)  # keys built, the read sent...
            self.keys = RedisKeys("pulse-v2" if self.keys.prefix == "pulse" else "pulse")  # ...the alias moves
            await asyncio.sleep(0)
            return found

    async def run() -> list[httpx.Response]:
        client, store, _ = _client()
        client._transport.app.state.services.store = store = SwitchingStore()  # type: ignore[attr-defined]
        client._transport.app.state.services.recommender.store = store  # type: ignore[attr-defined]
        async with client:
            return [await client.get("/v1/users/u1/recommendations"),  # the fast path
                    await client.get("/v1/users/u1/recommendations?k=010")]  # the route

    fast, slow = asyncio.run(run())
    assert fast.status_code == slow.status_code == 200
    assert fast.headers["x-pulse-prefix"] == "pulse" and slow.headers["x-pulse-prefix"] == "pulse-v2"


@pytest.mark.parametrize("path", [
    "/v1/users/u1/recommendations?k=0", "/v1/users/u1/recommendations?k=1001", "/v1/users/u1/recommendations?k=x",
    "/v1/users/u1/recommendations?explain=maybe", "/v1/users/u1/recommendations?segment=a%2Fb",
])
def test_invalid_requests_get_the_routes_400(path: str) -> None:
    a, _ = _both(path, path)
    assert a.status_code == 400 and a.json()["error"] == "invalid_request"


def test_api_keys_apply_to_the_fast_path() -> None:
    path = "/v1/users/u1/recommendations"
    missing, _ = _both(path, path, api_keys="k1")
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    ok, _ = _both(path, path, api_keys="k1", headers={"Authorization": "Bearer k1"})
    bad, _ = _both(path, path, api_keys="k1", headers={"Authorization": "Bearer k2"})
    assert ok.status_code == 200 and bad.status_code == 401


def test_store_errors_use_the_apps_handlers_and_metrics_see_the_route() -> None:
    async def run() -> tuple[httpx.Response, str]:
        client, store, metrics = _client()
        async with client:
            await client.get("/v1/users/u1/recommendations")  # fast path
            await client.get("/v1/users/u1/recommendations?k=03")  # FastAPI's router
            store.down = True
            response = await client.get("/v1/users/u1/recommendations")
            return response, metrics.render().decode()

    response, exposition = asyncio.run(run())
    assert response.status_code == 503 and response.json()["error"] == "redis_unavailable"
    route = 'method="GET",route="/v1/users/{user_id}/recommendations"'
    assert f'pulse_serving_request_duration_seconds_count{{{route},status="200"}} 2.0' in exposition
    assert f'pulse_serving_request_duration_seconds_count{{{route},status="503"}} 1.0' in exposition
    assert 'pulse_serving_recommendations_total{degraded="false",source="model"} 2.0' in exposition


@pytest.mark.parametrize(("query", "expected"), [
    (b"", (10, True, False, None)),
    (b"k=7&exclude_seen=0&explain=1&segment=men.x", (7, False, True, "men.x")),
    (b"k=10&", None), (b"k", None), (b"k=", None), (b"k=+1", None), (b"segment=a+b", None),
    (b"segment=a%20b", None), (b"other=1", None), (b"explain=TRUE", None),
])
def test_parse_query(query: bytes, expected: Any) -> None:
    assert parse_query(query) == expected
