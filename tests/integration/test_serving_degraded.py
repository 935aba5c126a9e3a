"""Redis going away under a running app: cached popularity keeps cold users served; the rest is 503."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from infra.local.process import free_port
from infra.local.redis import RedisServer
from producers.topics import ensure_topics
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running

T0 = 1_700_000_000_000


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone, so the test can stop it."""
    server = RedisServer(tmp_path, free_port())
    server.start(timeout_s=30)
    try:
        yield server
    finally:
        server.process.stop()


def test_cold_users_degrade_to_cached_popularity_when_redis_stops(settings: Settings, own_redis: RedisServer) -> None:
    ensure_topics(settings, [settings.topic_events])
    keys = RedisKeys(settings.redis_prefix)
    with RedisWriter(keys, "mf-v1", url=own_redis.url) as writer:
        writer.write_batch([(keys.popularity("*"), T0, {"segment": "*", "items": [["p1", 3.0], ["p2", 1.0]],
                                                        "at_ms": T0, "half_life_ms": 3_600_000})])
    app_settings = settings.model_copy(update={
        "redis_url": own_redis.url, "serving_popularity_cache_ttl_s": 600.0, "serving_api_keys": SecretStr("k")})
    with running(create_app(app_settings)) as url, httpx.Client(
            base_url=url, headers={"Authorization": "Bearer k"}, timeout=30.0) as client:
        live = client.get("/v1/users/cold/recommendations").json()
        assert live["degraded"] is False and [i["item_id"] for i in live["items"]] == ["p1", "p2"]
        own_redis.process.stop()
        cached = client.get("/v1/users/cold/recommendations", params={"segment": "men"})
        assert cached.status_code == 200
        body = cached.json()
        assert body["degraded"] is True and body["source"] == "popularity" and body["segment"] == "*"
        assert [i["item_id"] for i in body["items"]] == ["p1", "p2"]
        session = client.get("/v1/users/cold/session")
        assert session.status_code == 503 and session.json()["error"] == "redis_unavailable"
        metrics = client.get("/metrics").text
        assert 'pulse_serving_recommendations_total{degraded="true",source="popularity"} 1.0' in metrics
        assert 'pulse_serving_errors_total{reason="redis_unavailable"} 1.0' in metrics
