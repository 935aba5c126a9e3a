"""The serving shim against real Redis and Kafka: every endpoint, seeded exactly as the job writes keys."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer
from pydantic import SecretStr

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from infra.local.process import free_port
from producers.topics import ensure_topics
from schemas import Event, EventCodec, EventType
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running

API_KEY = "test-key-1"
T0 = 1_700_000_000_000
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def serving_settings(settings: Settings, **update: Any) -> Settings:
    defaults: dict[str, Any] = {"serving_api_keys": SecretStr(f"other-key,{API_KEY}"), "serving_control_share": 0.0}
    return settings.model_copy(update={**defaults, **update})


@pytest.fixture
def keys(settings: Settings) -> RedisKeys:
    return RedisKeys(settings.redis_prefix)


@pytest.fixture
def writer(keys: RedisKeys, redis_url: str) -> Iterator[RedisWriter]:
    with RedisWriter(keys, "mf-v1", url=redis_url) as w:
        yield w


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[..., httpx.Client]]:
    """``serve(**settings_update)`` -> an httpx client (with the API key) of a running app."""
    ensure_topics(settings, [settings.topic_events])
    stack: list[Any] = []

    def start(**update: Any) -> httpx.Client:
        server = running(create_app(serving_settings(settings, **update)))
        url = server.__enter__()
        client = httpx.Client(base_url=url, headers=AUTH, timeout=30.0)
        stack.append((server, client))
        return client

    yield start
    for server, client in reversed(stack):
        client.close()
        server.__exit__(None, None, None)


@pytest.fixture
def client(serve: Callable[..., httpx.Client]) -> httpx.Client:
    return serve()


def consume(settings: Settings, match: Callable[[Event], bool], timeout_s: float = 60.0) -> Event:
    """The first event on the events topic that ``match`` accepts."""
    codec = EventCodec()
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topic_events])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            event = codec.decode(msg.value())
            if match(event):
                return event
    finally:
        consumer.close()
    raise AssertionError(f"no matching event on {settings.topic_events}")


def seed_model(writer: RedisWriter, keys: RedisKeys, user: str) -> dict[str, float]:
    """User factors, item params and recs computed from them, as the job writes them; returns the scores."""
    mean, user_bias, user_factors = 3.5, 0.25, [0.1, -0.2, 0.3]
    items = {"i1": (0.5, [1.0, 0.0, 0.5]), "i2": (-0.1, [0.2, 0.4, -0.1]), "i3": (0.05, [0.0, 1.0, 1.0])}
    scores = {item: mean + user_bias + bias + sum(u * f for u, f in zip(user_factors, factors, strict=True))
              for item, (bias, factors) in items.items()}
    ranked = sorted(scores.items(), key=lambda pair: -pair[1])
    writer.write_batch([
        (keys.factors(user), T0, {"bias": user_bias, "factors": user_factors}),
        *((keys.item_params(item), T0, {"bias": bias, "factors": factors, "version": 7})
          for item, (bias, factors) in items.items()),
        (keys.recs(user), T0, {"items": [[item, score] for item, score in ranked], "global_mean": mean}),
    ])
    return scores


def test_recommendations_from_the_model_with_explanations(client: httpx.Client, writer: RedisWriter,
                                                          keys: RedisKeys) -> None:
    scores = seed_model(writer, keys, "u1")
    body = client.get("/v1/users/u1/recommendations", params={"k": 2, "explain": "true"}).json()
    assert body["source"] == "model" and body["model_version"] == "mf-v1"
    assert body["event_time_ms"] == T0 and body["freshness_ms"] >= 0 and body["degraded"] is False
    ranked = sorted(scores, key=lambda item: -scores[item])
    assert [item["item_id"] for item in body["items"]] == ranked[:2]
    for item in body["items"]:
        why = item["explanation"]
        parts = why["global_mean"] + why["user_bias"] + why["item_bias"] + why["dot"]
        assert parts == pytest.approx(item["score"], abs=1e-12)
        assert why["total"] == pytest.approx(item["score"], abs=1e-12)
        assert why["item_params_version"] == 7
    plain = client.get("/v1/users/u1/recommendations").json()
    assert [item["item_id"] for item in plain["items"]] == ranked
    assert all(item["explanation"] is None for item in plain["items"])


def test_recommendations_exclude_the_live_session(client: httpx.Client, writer: RedisWriter, keys: RedisKeys) -> None:
    scores = seed_model(writer, keys, "u2")
    best = max(scores, key=lambda item: scores[item])
    writer.write_batch([(keys.session("u2"), T0 + 5, {"open": True, "session_id": "s1", "start_ms": T0,
                                                       "end_ms": T0 + 5, "n_events": 2, "counts": {"view": 2},
                                                       "recent_items": [best], "categories": {}})])
    seen = [i["item_id"] for i in client.get("/v1/users/u2/recommendations").json()["items"]]
    assert best not in seen and len(seen) == 2
    everything = client.get("/v1/users/u2/recommendations", params={"exclude_seen": "false"}).json()
    assert best in [i["item_id"] for i in everything["items"]]


def test_cold_users_get_segment_popularity_with_fallback_to_all(client: httpx.Client, writer: RedisWriter,
                                                                keys: RedisKeys) -> None:
    half_life = 3_600_000
    writer.write_batch([
        (keys.popularity("*"), T0, {"segment": "*", "items": [["p1", 9.0], ["p2", 4.0], ["p3", 1.0]],
                                    "at_ms": T0, "half_life_ms": half_life}),
        (keys.popularity("men"), T0, {"segment": "men", "items": [["m1", 5.0], ["m2", 2.0]],
                                      "at_ms": T0, "half_life_ms": half_life}),
    ])
    men = client.get("/v1/users/nobody/recommendations", params={"segment": "men", "k": 5}).json()
    assert men["source"] == "popularity" and men["segment"] == "men"
    assert [i["item_id"] for i in men["items"]] == ["m1", "m2"]
    assert men["items"][0]["score"] < 5.0  # decayed since T0
    assert men["freshness_ms"] > 0 and men["model_version"] == "mf-v1"
    other = client.get("/v1/users/nobody/recommendations", params={"segment": "kids", "k": 2}).json()
    assert other["segment"] == "*" and [i["item_id"] for i in other["items"]] == ["p1", "p2"]
    assert client.get("/v1/users/nobody/recommendations").json()["segment"] == "*"


def test_nothing_to_serve_is_an_empty_list(client: httpx.Client) -> None:
    body = client.get("/v1/users/nobody/recommendations").json()
    assert body["items"] == [] and body["model_version"] is None and body["source"] == "popularity"


def test_session(client: httpx.Client, writer: RedisWriter, keys: RedisKeys) -> None:
    session = {"open": True, "session_id": "s9", "start_ms": T0, "end_ms": T0 + 60_000, "n_events": 3, "n_late": 0,
               "counts": {"view": 2, "click": 1}, "recent_items": ["a", "b"], "categories": {"shoes": 2}}
    writer.write_batch([(keys.session("u3"), T0 + 60_000, session)])
    body = client.get("/v1/users/u3/session").json()
    assert {k: body[k] for k in session} == session
    assert body["event_time_ms"] == T0 + 60_000 and body["model_version"] == "mf-v1"
    missing = client.get("/v1/users/ghost/session")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_decision_propensity_matches_the_logged_impression(client: httpx.Client, writer: RedisWriter,
                                                           keys: RedisKeys, settings: Settings) -> None:
    arms = {"a": [30.0, 70.0], "b": [50.0, 50.0], "c": [5.0, 95.0]}
    writer.write_batch([(keys.bandit("ts", "global"), T0, {
        "policy": "ts", "scope": "global", "stat_names": ["successes", "failures"], "arms": arms,
        "hyperparameters": {"prior_alpha": 1.0, "prior_beta": 1.0}})])
    response = client.post("/v1/decisions", json={"user_id": "u4", "decision_point": "home",
                                                   "context": {"segment": "men", "device": "ios"}})
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["policy"] == "ts" and decision["variant"] == "treatment" and decision["arm"] in arms
    assert 0.0 < decision["propensity"] <= 1.0
    impression = consume(settings, lambda e: e.decision is not None
                         and e.decision.request_id == decision["request_id"])
    assert impression.type is EventType.IMPRESSION and impression.user_id == "u4"
    assert impression.decision is not None
    assert impression.decision.propensity == decision["propensity"]
    assert impression.decision.arm == decision["arm"] == impression.item_id
    assert impression.context["experiment"] == "bandit-v1" and impression.context["variant"] == "treatment"
    assert impression.context["decision_point"] == "home" and impression.context["segment"] == "men"
    assert impression.context["bandit_scope"] == decision["scope"] == "global"


def test_decisions_use_the_segment_scope_and_the_control_policy(serve: Callable[..., httpx.Client],
                                                                 writer: RedisWriter, keys: RedisKeys,
                                                                 settings: Settings) -> None:
    writer.write_batch([(keys.bandit("ts", "segment:men"), T0, {
        "policy": "ts", "scope": "segment:men", "stat_names": ["successes", "failures"],
        "arms": {"a": [90.0, 10.0], "b": [1.0, 99.0]}, "hyperparameters": {"prior_alpha": 1.0, "prior_beta": 1.0}})])
    treatment = serve(serving_bandit_scope="segment")
    body = treatment.post("/v1/decisions", json={"user_id": "u5", "decision_point": "home",
                                                  "context": {"segment": "men"}}).json()
    assert body["scope"] == "segment:men" and body["model_version"] == "mf-v1"
    assert (body["arm"], body["propensity"]) == ("a", 1.0)  # b cannot win a draw against Beta(91, 11)
    control = serve(serving_control_share=1.0)
    body = control.post("/v1/decisions", json={"user_id": "u5", "decision_point": "home",
                                                "arms": ["x", "y", "z", "w"]}).json()
    assert body["policy"] == "uniform" and body["variant"] == "control" and body["propensity"] == 0.25
    impression = consume(settings, lambda e: e.decision is not None and e.decision.request_id == body["request_id"])
    assert impression.decision is not None and impression.decision.propensity == 0.25
    assert impression.context["variant"] == "control"
    no_arms = control.post("/v1/decisions", json={"user_id": "u5", "decision_point": "home"})
    assert no_arms.status_code == 404 and no_arms.json()["error"] == "no_arms"


def test_collector_accepts_after_the_ack_and_rejects_bad_events(client: httpx.Client, settings: Settings) -> None:
    now = int(time.time() * 1000)
    response = client.post("/v1/events", json={"event_id": "ev-1", "type": "rating", "user_id": "u6",
                                               "item_id": "i1", "value": 4.0, "event_time_ms": now,
                                               "context": {"segment": "men"}})
    assert response.status_code == 202, response.text
    assert response.json()["topic"] == settings.topic_events and response.json()["offset"] >= 0
    stored = consume(settings, lambda e: e.event_id == "ev-1")
    assert (stored.type, stored.user_id, stored.item_id, stored.value) == (EventType.RATING, "u6", "i1", 4.0)
    assert stored.context == {"segment": "men"} and stored.event_time_ms == now
    bad = {
        "bad_timestamp": {"type": "view", "user_id": "u6", "item_id": "i1", "event_time_ms": now + 48 * 3_600_000},
        "invalid_request ": {"type": "view", "user_id": "u6", "item_id": "i1", "event_time_ms": now // 1000},
        "missing_field": {"type": "rating", "user_id": "u6", "item_id": "i1"},
        "invalid_request": {"type": "teleport", "user_id": "u6"},
    }
    for reason, event in bad.items():
        rejected = client.post("/v1/events", json=event)
        assert rejected.status_code == 400, (reason, rejected.text)
        assert rejected.json()["error"] == reason.strip() and rejected.json()["detail"]
    bad_id = client.post("/v1/events", json={"type": "view", "user_id": "u/6", "item_id": "i1"})
    assert bad_id.status_code == 400 and "user_id" in bad_id.json()["detail"]


def test_erasure_emits_an_erase_event_and_deletes_the_keys(client: httpx.Client, writer: RedisWriter,
                                                            keys: RedisKeys, settings: Settings,
                                                            redis_client: Any) -> None:
    seed_model(writer, keys, "u7")
    writer.write_batch([(keys.session("u7"), T0, {"open": False}), (keys.counts("u7"), T0, {"counts": {}}),
                        (keys.bandit("ts", "user:u7"), T0, {"policy": "ts", "arms": {}})])
    response = client.delete("/v1/users/u7")
    assert response.status_code == 202
    assert response.json()["keys_deleted"] == 5
    assert redis_client.exists(*keys.user_keys("u7"), keys.bandit("ts", "user:u7")) == 0
    assert redis_client.exists(keys.item_params("i1")) == 1  # items are not the user's
    erase = consume(settings, lambda e: e.event_id == response.json()["event_id"])
    assert erase.type is EventType.ERASE and erase.user_id == "u7"


def test_health_readiness_and_metrics(client: httpx.Client, writer: RedisWriter, keys: RedisKeys) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"redis": "ok", "kafka": "ok"}
    client.get("/v1/users/cold/recommendations")
    client.get("/v1/users/cold/recommendations", headers={"Authorization": "Bearer nope"})
    text = client.get("/metrics").text
    assert 'pulse_serving_recommendations_total{degraded="false",source="popularity"} 1.0' in text
    assert 'pulse_serving_errors_total{reason="unauthorized"} 1.0' in text
    assert 'route="/v1/users/{user_id}/recommendations",status="200"' in text


def test_api_keys_input_limits_and_body_size(client: httpx.Client) -> None:
    url = "/v1/users/u1/recommendations"
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        response = client.get(url, headers=headers)
        assert response.status_code == 401 and response.json()["error"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get(url, headers={"Authorization": "Bearer other-key"}).status_code == 200
    assert client.get(url, params={"k": 1001}).status_code == 400
    assert client.get(url, params={"k": 0}).status_code == 400
    assert client.get("/v1/users/" + "x" * 257 + "/recommendations").status_code == 400
    assert client.get("/v1/users/bad%7Bid%7D/recommendations").status_code == 400
    big = b"x" * (10 * 1024 * 1024)
    too_large = client.post("/v1/events", content=big, headers={"content-type": "application/json"})
    assert too_large.status_code == 413 and too_large.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    streamed = client.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413


def test_redis_down_is_a_503_with_a_reason(serve: Callable[..., httpx.Client]) -> None:
    client = serve(redis_url=f"redis://127.0.0.1:{free_port()}/0", serving_popularity_cache_ttl_s=60.0)
    for path in ("/v1/users/u1/recommendations", "/v1/users/u1/session"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.json()["error"] == "redis_unavailable" and "Traceback" not in response.text
    decision = client.post("/v1/decisions", json={"user_id": "u1", "decision_point": "home", "arms": ["a"]})
    assert decision.status_code == 503
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("redis_unavailable")
