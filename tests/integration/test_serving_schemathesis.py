"""Property-based API test: schemathesis generates requests from the served OpenAPI schema.

Every operation, bounded (30 examples each, no shrinking phase beyond hypothesis' default
deadline-free run): no 5xx, and every response matches the schema the app publishes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from pydantic import SecretStr
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from producers.topics import ensure_topics
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running

API_KEY = "schemathesis-key"
T0 = 1_700_000_000_000


@pytest.fixture(scope="module")
def served(kafka_bootstrap: str, redis_url: str) -> Iterator[str]:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, topic_events=f"events-{suffix}",
                        redis_prefix=f"pulse-test-{suffix}", serving_api_keys=SecretStr(API_KEY),
                        serving_kafka_timeout_s=5.0)
    ensure_topics(settings, [settings.topic_events])
    keys = RedisKeys(settings.redis_prefix)
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:  # something for the generated ids to find
        writer.write_batch([
            (keys.popularity("*"), T0, {"segment": "*", "items": [["p1", 2.0]], "at_ms": T0, "half_life_ms": 1000}),
            (keys.bandit("ts", "global"), T0, {"policy": "ts", "scope": "global", "arms": {"a": [1.0, 2.0]},
                                               "stat_names": ["successes", "failures"], "hyperparameters": {}}),
            (keys.recs("0"), T0, {"items": [["p1", 4.0]], "global_mean": 3.5}),
            (keys.session("0"), T0, {"open": True, "session_id": "s", "recent_items": []}),
        ])
    with running(create_app(settings)) as url:
        yield url


# Loaded from the app object at import (``from_fixture`` breaks under pytest 9: it sets ``node._nodeid``);
# test_the_served_schema_is_the_tested_one checks the served /openapi.json is this same document.
OPENAPI = create_app(Settings(serving_api_keys=SecretStr(API_KEY))).openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)


def test_the_served_schema_is_the_tested_one(served: str) -> None:
    assert httpx.get(f"{served}/openapi.json").json() == OPENAPI


#: Every operation, by its label ("GET /healthz"): plain pytest parameters, so every case has a node id of
#: its own (schemathesis' own parametrize gives all of them one, and pytest-xdist then runs only the first).
OPERATIONS = {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_api_conforms_to_its_schema(label: str, served: str) -> None:
    # The collector's type- and clock-dependent checks (item events need item_id, ratings a value,
    # impressions a decision, no event more than 24 h ahead) are not expressible in the schema: there a
    # schema-valid body may get a documented 400 with its reason. Every other check applies everywhere.
    # A batch is judged event by event: a batch with invalid events is answered 200 with those events
    # rejected (and their reasons) in the per-event results, so a schema-violating event is not a 400.
    excluded = {"/v1/events": [positive_data_acceptance], "/v1/events:batch": [negative_data_rejection]}
    operation = OPERATIONS[label]

    @given(case=operation.as_strategy())
    @hypothesis_settings(max_examples=30, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))
    def conforms(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=served, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30,
                               excluded_checks=excluded.get(operation.path))

    conforms()
