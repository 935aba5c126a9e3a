"""Experiments in serving without services: the variant picks the policy, responses name it, decisions follow it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from config.experiments import Experiment, Variant
from serving.decisions import Decider, DecisionPolicy
from serving.models import DecisionRequest, Recommendations
from serving.recommendations import Recommender
from tests.unit.serving.test_arm_distributions import _TABLES, _Store
from tests.unit.serving.test_recommendations import T0, Store

USERS = [f"u{i}" for i in range(200)]


def test_a_popularity_variant_serves_popularity_to_a_user_with_scores() -> None:
    recommender = Recommender(Store(), clock_ms=lambda: T0 + 60_000)  # type: ignore[arg-type]
    model = asyncio.run(recommender.recommend("u1", 3))
    popular = asyncio.run(recommender.recommend("u1", 3, policy="popularity", experiment="home", variant="B"))
    assert model["source"] == "model" and model["experiment"] is None and model["variant"] is None
    assert popular["source"] == "popularity" and [i["item_id"] for i in popular["items"]] == ["p1", "p2"]
    assert (popular["experiment"], popular["variant"]) == ("home", "B")
    document = Recommendations.model_validate(popular)  # the documented model, field for field
    assert orjson.dumps(popular) == document.__pydantic_serializer__.to_json(document)


def test_decisions_follow_the_configured_experiment() -> None:
    banner = Experiment(name="banner", surface="decisions", salt="s", variants=(
        Variant(name="random", policy="uniform", share=0.3), Variant(name="bandit", policy="ts", share=0.5)))
    decider = Decider(_Store("ts", _TABLES["ts"]), DecisionPolicy(assignment=banner))  # type: ignore[arg-type]
    seen: dict[Any, int] = {}
    for user in USERS:
        response = asyncio.run(decider.decide(DecisionRequest(user_id=user, decision_point="home"), T0))
        event = response.impression()
        variant = banner.assign(user)
        seen[variant.name if variant else None] = seen.get(variant.name if variant else None, 0) + 1
        if variant is None:  # outside the shares: the bandit, no experiment in the answer or the impression
            assert (response.experiment, response.variant, response.policy) == (None, None, "ts")
            assert "experiment" not in event.context and "variant" not in event.context
        else:
            assert (response.experiment, response.variant) == ("banner", variant.name)
            assert response.policy == ("uniform" if variant.policy == "uniform" else "ts")
            assert (event.context["experiment"], event.context["variant"]) == ("banner", variant.name)
            if variant.policy == "uniform":
                assert response.propensity == 1 / 4  # four arms in the table
    assert set(seen) == {"random", "bandit", None}
