"""Decisions with the job's UCB and epsilon-greedy arm tables, read from a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from online_models.bandits import make_bandit
from online_models.bandits.mab import UCB, EpsilonGreedy
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running

T0 = 1_700_000_000_000


def _job_payload(bandit: Any, scope: str, policy: str) -> dict[str, Any]:
    """What flink_jobs.shared_state writes for a bandit (same fields)."""
    hyper = {name: float(getattr(bandit, name)) for name in ("c", "epsilon", "decay") if hasattr(bandit, name)}
    return {"policy": policy, "scope": scope, "stat_names": list(bandit.STAT_NAMES),
            "arms": {arm: list(stats) for arm, stats in bandit.arm_table().items()}, "hyperparameters": hyper}


@pytest.fixture
def decide(settings: Settings, redis_url: str) -> Iterator[Any]:
    clients: list[Any] = []

    def start(policy: str, bandit: Any) -> httpx.Client:
        keys = RedisKeys(settings.redis_prefix)
        with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
            writer.write_batch([(keys.bandit(policy, "global"), T0, _job_payload(bandit, "global", policy))])
        app_settings = settings.model_copy(update={"bandit_policy": policy, "serving_control_share": 0.0})
        server = running(create_app(app_settings))
        client = httpx.Client(base_url=server.__enter__(), timeout=30.0)
        clients.append((server, client))
        return client

    yield start
    for server, client in clients:
        client.close()
        server.__exit__(None, None, None)


def _learned(policy: str, rewards: dict[str, list[float]], **hyper: float) -> Any:
    bandit = make_bandit(policy, seed=0, **hyper)
    for arm, values in rewards.items():
        for value in values:
            bandit.update(arm, value)
    return bandit


def test_ucb_decides_from_the_job_arm_table(decide: Any) -> None:
    bandit = _learned("ucb", {"a": [1.0, 0.0, 0.0, 0.0], "b": [1.0, 1.0, 1.0], "c": [0.0]}, c=0.5)
    client = decide("ucb", bandit)
    bounds = bandit.upper_bounds(["a", "b", "c"])
    best = max(bounds, key=bounds.__getitem__)
    for arms in (None, ["a", "b", "c"], ["a", "c"]):
        response = client.post("/v1/decisions", json={"user_id": "u1", "decision_point": "home",
                                                      **({"arms": arms} if arms else {})})
        assert response.status_code == 200, response.text
        body = response.json()
        candidates = arms or ["a", "b", "c"]
        expected = bandit.arm_probabilities(candidates)
        assert body["policy"] == "ucb" and body["variant"] == "treatment" and body["scope"] == "global"
        assert body["propensity"] == expected[body["arm"]] > 0
        if arms is None:
            assert body["arm"] == best  # no tie: the largest upper bound, with propensity 1
    # an arm never pulled has an infinite bound: it wins
    body = client.post("/v1/decisions", json={"user_id": "u1", "decision_point": "home",
                                               "arms": ["a", "new"]}).json()
    assert (body["arm"], body["propensity"]) == ("new", 1.0)
    restored = UCB.from_arm_table(bandit.arm_table(), n_updates=8, c=0.5)
    assert restored.upper_bounds(["a", "b", "c"]) == bounds


def test_epsilon_greedy_decides_with_exact_propensities(decide: Any) -> None:
    bandit = _learned("egreedy", {"a": [1.0, 0.0], "b": [1.0, 1.0], "c": [0.0, 0.0, 0.0]}, epsilon=0.3)
    client = decide("egreedy", bandit)
    expected = bandit.arm_probabilities(["a", "b", "c"])
    assert expected == pytest.approx({"a": 0.1, "b": 0.8, "c": 0.1})
    seen = set()
    for i in range(60):
        body = client.post("/v1/decisions", json={"user_id": f"u{i}", "decision_point": "home"}).json()
        assert body["policy"] == "egreedy"
        assert body["propensity"] == pytest.approx(expected[body["arm"]])
        # the response is what the restored bandit pulls with the request's seed
        again = EpsilonGreedy.from_arm_table(bandit.arm_table(), n_updates=7, seed=int(body["request_id"], 16) % 2**64,
                                             epsilon=0.3)
        assert again.pull(["a", "b", "c"]).arm == body["arm"]
        seen.add(body["arm"])
    assert "b" in seen and len(seen) >= 2  # explores: all 60 on b has probability 0.8**60 < 2e-6
