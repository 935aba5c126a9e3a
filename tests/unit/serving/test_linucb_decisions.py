"""Serving's LinUCB choice is the learner's: same state, context and seed give the same arm and propensity.

The arm table the job writes (``LinUCB.table_payload``) round-trips the learner exactly; the
:class:`~serving.decisions.Decider` decides from it on the context the impression logs.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import numpy as np
import orjson
import pytest

from online_models.bandits import LinUCB
from schemas.redis_keys import Envelope
from serving.decisions import Decider, DecisionError, DecisionPolicy
from serving.linucb_decisions import LinUCBTable, LinUCBTables
from serving.models import DecisionRequest

T0 = 1_700_000_000_000
ARMS = ("a", "b", "c", "d")
FEATURES = ("segment", "device", "decision_point")


def _trained(seed: int = 3, n: int = 400) -> LinUCB:
    """A LinUCB that learned a planted rule: men click a, women b, mobile users c."""
    rng = random.Random(seed)
    bandit = LinUCB(alpha=0.4, n_features=32, features=FEATURES)  # no two of these values collide at 32
    for _ in range(n):
        context = {"segment": rng.choice(["men", "women"]), "device": rng.choice(["mobile", "desktop"]),
                   "decision_point": "home"}
        arm = rng.choice(ARMS)
        good = {"a": context["segment"] == "men", "b": context["segment"] == "women",
                "c": context["device"] == "mobile", "d": False}[arm]
        bandit.update(arm, float(good and rng.random() < 0.7), context)
    return bandit


def _contexts() -> list[dict[str, str]]:
    return [{"segment": s, "device": d, "decision_point": p} for s in ("men", "women", "kids")
            for d in ("mobile", "desktop") for p in ("home", "cart")]


def test_the_arm_table_round_trips_the_learner_exactly() -> None:
    bandit = _trained()
    payload = orjson.loads(orjson.dumps(bandit.table_payload()))  # as Redis stores it
    restored = LinUCB.from_table_payload(payload)
    assert restored.to_bytes() == bandit.to_bytes()
    assert payload["stat_names"] == ["updates", "reward_sum"]
    assert sum(updates for updates, _ in payload["arms"].values()) == 400
    assert payload["features"] == list(FEATURES) and payload["hyperparameters"]["alpha"] == 0.4
    with pytest.raises(ValueError, match="no state"):
        LinUCB.from_table_payload({"arms": {}})


@pytest.mark.parametrize("seed", [0, 1, 7, 2**63 + 5])
def test_serving_chooses_what_the_learner_pulls_with_the_requests_seed(seed: int) -> None:
    bandit = _trained()
    table = LinUCBTable.of(orjson.loads(orjson.dumps(bandit.table_payload())))
    assert table.arms == ARMS
    for context in _contexts():
        copy = LinUCB.from_bytes(bandit.to_bytes())
        copy.seed = seed
        pulled = copy.pull(list(ARMS), context)  # a fresh copy's first pull: the request's generator
        index, propensity = table.choose(ARMS, context, seed)
        assert (ARMS[index], propensity) == (pulled.arm, pulled.propensity)
        assert propensity == bandit.arm_probabilities(list(ARMS), context)[pulled.arm]
        bounds = bandit.upper_bounds(list(ARMS), context)
        assert bounds[pulled.arm] == max(bounds.values())


def test_the_learner_learned_the_planted_rule_and_ties_are_split_by_the_seed() -> None:
    table = LinUCBTable.of(_trained(n=2000).table_payload())
    men = {"segment": "men", "device": "desktop", "decision_point": "home"}
    women = {"segment": "women", "device": "desktop", "decision_point": "home"}
    assert ARMS[table.choose(ARMS, men, 1)[0]] == "a" and ARMS[table.choose(ARMS, women, 1)[0]] == "b"
    # two arms never updated tie exactly: each chosen with propensity 1/2, which one by the seed
    chosen = {table.choose(("new1", "new2"), men, seed) for seed in range(40)}
    assert chosen == {(0, 0.5), (1, 0.5)}


def test_the_stacked_scores_equal_the_per_arm_formula() -> None:
    bandit = _trained()
    for context in _contexts():
        x = bandit.featurize(context)
        for arm, (mean, width) in bandit.estimates(list(ARMS), context).items():
            assert bandit.upper_bounds(list(ARMS), context)[arm] == pytest.approx(
                mean + bandit.alpha * np.sqrt(width), rel=1e-12)
        assert bandit.scores(ARMS, x).shape == (len(ARMS),)


class _Store:
    """The global scope's LinUCB table, as the job wrote it."""

    def __init__(self, payload: dict[str, object] | None) -> None:
        self.envelope = None if payload is None else Envelope(payload, T0, T0, "mf-v1")

    async def bandits(self, policy: str, scope_keys: Sequence[str]) -> list[Envelope | None]:
        assert policy == "linucb"
        return [self.envelope if key == "global" else None for key in scope_keys]


def test_the_decider_decides_on_the_logged_context_and_replays_by_request_id() -> None:
    bandit = _trained()
    decider = Decider(_Store({"policy": "linucb", "scope": "global", **bandit.table_payload()}),  # type: ignore[arg-type]
                      DecisionPolicy(bandit_policy="linucb", control_share=0.0))

    async def run() -> None:
        for context in _contexts():
            request = DecisionRequest(user_id="u1", decision_point=context["decision_point"],
                                      context={k: v for k, v in context.items() if k != "decision_point"})
            response = await decider.decide(request, T0)
            event = response.impression()
            seed = int(response.request_id, 16) % 2**64
            expected = bandit.decide(list(ARMS), event.context, seed)
            assert (response.arm, response.propensity, response.policy) == (expected.arm, expected.propensity,
                                                                            "linucb")
            assert event.decision is not None and event.decision.propensity == response.propensity
            logged = event.context
            assert (logged["bandit_scope"], logged["decision_point"]) == ("global", request.decision_point)
            again = await decider.decide(request, T0, request_id=response.request_id)
            assert (again.arm, again.propensity) == (response.arm, response.propensity)

    asyncio.run(run())


def test_no_table_is_the_prior_and_a_table_without_state_is_an_error() -> None:
    async def run() -> None:
        prior = Decider(_Store(None), DecisionPolicy(bandit_policy="linucb", control_share=0.0))  # type: ignore[arg-type]
        response = await prior.decide(DecisionRequest(user_id="u1", decision_point="home", arms=["x", "y"]), T0)
        assert response.propensity == 0.5 and response.model_version is None
        broken = Decider(_Store({"policy": "linucb", "arms": {}}),  # type: ignore[arg-type]
                         DecisionPolicy(bandit_policy="linucb", control_share=0.0))
        with pytest.raises(DecisionError) as error:
            await broken.decide(DecisionRequest(user_id="u1", decision_point="home", arms=["x"]), T0)
        assert error.value.reason == "invalid_arm_table" and error.value.status == 500

    asyncio.run(run())


def test_tables_are_restored_once_per_stored_version() -> None:
    payload = _trained(n=50).table_payload()
    tables = LinUCBTables(max_entries=2)
    envelope = Envelope(payload, T0, T0, "v1")
    first = tables.table("global", envelope)
    assert tables.table("global", envelope) is first
    assert tables.table("global", Envelope(payload, T0, T0, "v2")) is not first
