"""Experiment definitions and the hashed assignment: deterministic, shares kept, salted, bad configs rejected."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from config import Settings
from config.experiments import Experiment, ExperimentConfigError, Variant, bucket, parse_experiments
from serving.decisions import CONTROL, TREATMENT, DecisionPolicy, assign_variant

USERS = [f"user-{i}" for i in range(100_000)]


def experiment(*shares: float, salt: str = "", surface: str = "recommendations") -> Experiment:
    policies = ["mf", "popularity"] if surface == "recommendations" else ["uniform", "ts"]
    return Experiment(name="home", surface=surface, salt=salt,  # type: ignore[arg-type]
                      variants=tuple(Variant(name=f"v{i}", policy=policies[i % 2], share=share)
                                     for i, share in enumerate(shares)))


def test_assignment_is_deterministic_and_pure() -> None:
    exp = experiment(0.5, 0.5)
    first = [exp.assign(u) for u in USERS[:2000]]
    again = experiment(0.5, 0.5)  # a new object from the same definition (another worker, a restart)
    assert first == [again.assign(u) for u in USERS[:2000]]
    assert all(0.0 <= bucket(u, "home") < 1.0 for u in USERS[:2000])


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.1, 0.9), (0.2, 0.3, 0.5), (0.25, 0.25)])
def test_shares_are_respected_over_100k_users(shares: tuple[float, ...]) -> None:
    exp = experiment(*shares)
    counts = Counter(v.name if v is not None else None for v in map(exp.assign, USERS))
    for i, share in enumerate(shares):
        # Binomial sd at n=100k is at most 0.0016: 0.006 is ~4 sd.
        assert counts[f"v{i}"] / len(USERS) == pytest.approx(share, abs=0.006)
    assert counts[None] / len(USERS) == pytest.approx(1.0 - sum(shares), abs=0.006)


def test_salt_changes_the_assignment_and_defaults_to_the_name() -> None:
    base = [exp.name if (exp := experiment(0.5, 0.5).assign(u)) else None for u in USERS[:5000]]
    salted = [exp.name if (exp := experiment(0.5, 0.5, salt="round-2").assign(u)) else None for u in USERS[:5000]]
    moved = sum(a != b for a, b in zip(base, salted, strict=True)) / len(base)
    assert 0.4 < moved < 0.6  # independent halves: about half the users switch
    named = experiment(0.5, 0.5, salt="home")
    assert [v.name if v else None for v in map(named.assign, USERS[:5000])] == base


def test_the_legacy_decision_split_assigns_as_before() -> None:
    """Decisions without PULSE_EXPERIMENTS: the control share's split, user for user as assign_variant did."""
    from serving.decisions import Decider

    decider = Decider(None, DecisionPolicy(salt="pulse", control_share=0.2))  # type: ignore[arg-type]
    for user in USERS[:5000]:
        variant = decider._variant(user)
        assert variant is not None and variant.name == assign_variant(user, "pulse", 0.2)
        assert variant.policy == ("uniform" if variant.name == CONTROL else "ts")
    assert {Decider(None, DecisionPolicy(control_share=0.0))._variant(u).name  # type: ignore[arg-type, union-attr]
            for u in USERS[:500]} == {TREATMENT}


def test_settings_read_experiments_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    text = json.dumps([
        {"name": "home-recs", "surface": "recommendations",
         "variants": [{"name": "A", "policy": "mf", "share": 0.5},
                      {"name": "B", "policy": "popularity", "share": 0.5}]},
        {"name": "banner", "surface": "decisions", "salt": "s1",
         "variants": [{"name": "control", "policy": "uniform", "share": 0.1},
                      {"name": "ts", "policy": "ts", "share": 0.9}]},
    ])
    settings = Settings(experiments=text)  # type: ignore[arg-type]
    assert [e.name for e in settings.experiments] == ["home-recs", "banner"]
    assert settings.experiments[1].hash_salt == "s1" and settings.experiments[0].hash_salt == "home-recs"
    assert Settings(experiments=settings.to_env()["PULSE_EXPERIMENTS"]).experiments == settings.experiments  # type: ignore[arg-type]
    assert Settings().experiments == () and Settings().to_env()["PULSE_EXPERIMENTS"] == "[]"
    monkeypatch.setenv("PULSE_EXPERIMENTS", text)
    assert Settings().experiments == settings.experiments


@pytest.mark.parametrize(("definition", "message"), [
    ("not json", "PULSE_EXPERIMENTS: not JSON"),
    ([{"name": "x", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": 0.7},
                                                              {"name": "b", "policy": "popularity", "share": 0.7}]}],
     "PULSE_EXPERIMENTS: experiment 'x': variant shares sum to 1.4, more than 1"),
    ([{"name": "x", "surface": "recommendations", "variants": [{"name": "a", "policy": "ts", "share": 1}]}],
     "experiment 'x': variant 'a': policy 'ts' is not a recommendations policy (mf, popularity)"),
    ([{"name": "x", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": 0.5},
                                                              {"name": "a", "policy": "mf", "share": 0.5}]}],
     "experiment 'x': variant names repeat"),
    ([{"name": "x", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": -0.1}]}],
     "experiment 'x': variants.0.share: Input should be greater than or equal to 0"),
    ([{"name": "x", "surface": "recommendations", "variants": []}],
     "experiment 'x': variants: Tuple should have at least 1 item"),
    ([{"name": "x", "surface": "web", "variants": [{"name": "a", "policy": "mf", "share": 1}]}],
     "experiment 'x': surface: Input should be 'recommendations' or 'decisions'"),
    ([{"name": "x", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": 1}],
      "traffic": 1}], "experiment 'x': traffic: Extra inputs are not permitted"),
    ([{"name": "x y", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": 1}]}],
     "experiment 'x y': name: String should match pattern"),
    ([{"name": "x", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": 1}]},
      {"name": "y", "surface": "recommendations", "variants": [{"name": "a", "policy": "mf", "share": 1}]}],
     "experiments 'x' and 'y' both run on recommendations (one per surface)"),
])
def test_a_bad_definition_is_one_clear_line(definition: object, message: str) -> None:
    text = definition if isinstance(definition, str) else json.dumps(definition)
    with pytest.raises(ExperimentConfigError) as caught:
        parse_experiments(text)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ExperimentConfigError):  # the settings raise it as it is (not wrapped by pydantic)
        Settings(experiments=text)  # type: ignore[arg-type]


def test_a_decision_variant_needs_the_policy_the_job_learns() -> None:
    text = json.dumps([{"name": "b", "surface": "decisions", "variants": [{"name": "u", "policy": "ucb", "share": 1}]}])
    with pytest.raises(ExperimentConfigError, match=r"policy 'ucb' has no arm tables .*PULSE_BANDIT_POLICY=ts"):
        Settings(experiments=text)  # type: ignore[arg-type]
    assert Settings(experiments=text, bandit_policy="ucb").experiments[0].variants[0].policy == "ucb"  # type: ignore[arg-type]
