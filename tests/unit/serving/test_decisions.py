from __future__ import annotations

import pytest

from online_models.bandits import ThompsonSampling
from serving.decisions import CONTROL, TREATMENT, Decided, _scope_keys, assign_variant, rng_for, thompson_choice
from serving.models import DecisionResponse


@pytest.mark.parametrize("seed", [0, 1, 7, 2**63 + 5])
def test_thompson_choice_is_online_models_thompson_sampling_pulled_once(seed: int) -> None:
    """Serving's draw = a ThompsonSampling(seed) holding the same arm table, pulled once."""
    bandit = ThompsonSampling(prior_alpha=1.0, prior_beta=2.0, n_draws=500, seed=seed)
    for arm, rewards in {"a": [1, 0, 1, 1], "b": [0, 0, 1], "c": [], "d": [1, 0, 1, 1]}.items():
        for reward in rewards:
            bandit.update(arm, float(reward))
    arms = ["a", "b", "c", "d", "e"]
    table = bandit.arm_table()
    stats = [table.get(arm, (0.0, 0.0)) for arm in arms]
    index, propensity = thompson_choice(stats, 1.0, 2.0, 500, rng_for(seed))
    expected = bandit.pull(arms)
    assert (arms[index], propensity) == (expected.arm, expected.propensity)


def test_thompson_choice_propensity_is_positive_and_ties_share_exactly() -> None:
    index, propensity = thompson_choice([(0.0, 0.0)] * 4, 1.0, 1.0, 1000, rng_for(3))
    assert propensity == 0.25 and 0 <= index < 4
    _, p = thompson_choice([(0.0, 50.0), (50.0, 0.0)], 1.0, 1.0, 10, rng_for(3))
    assert 0.0 < p <= 1.0


def test_assignment_is_deterministic_salted_and_close_to_the_share() -> None:
    users = [f"u{i}" for i in range(4000)]
    first = [assign_variant(u, "s1", 0.2) for u in users]
    assert first == [assign_variant(u, "s1", 0.2) for u in users]
    share = first.count(CONTROL) / len(users)
    assert 0.17 < share < 0.23
    assert first != [assign_variant(u, "s2", 0.2) for u in users]
    assert {assign_variant(u, "s1", 0.0) for u in users} == {TREATMENT}


def test_scope_keys_fall_back_from_the_preferred_scope() -> None:
    assert _scope_keys("user", "u1", "men") == ("user:u1", "segment:men", "global")
    assert _scope_keys("segment", "u1", None) == ("global",)
    assert _scope_keys("global", "u1", "men") == ("global",)


@pytest.mark.parametrize("decided", [
    Decided("0123456789abcdef0123456789abcdef", "a1", 0.125, "ts", "bandit-v1", "treatment", "global", "mf-v1@7",
            "e1", "u1", 1, {}),
    Decided("r", "é", 1e-05, "uniform", "exp", "control", "segment:men", None, "e2", "u2", 2, {"segment": "men"}),
    Decided("r", "a", 1.0, "ts", None, None, "user:u1", None, "e3", "u1", 3, {}),
    Decided("r", "a", 0.1 + 0.2, "ucb", None, None, "global", "v", "e4", "u4", 4, {}),
])
def test_a_decision_answers_the_documented_response_model_byte_for_byte(decided: Decided) -> None:
    fields = {name: getattr(decided, name) for name in DecisionResponse.model_fields}
    model = DecisionResponse(**fields)
    assert decided.json() == model.__pydantic_serializer__.to_json(model)

