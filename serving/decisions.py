"""Bandit decisions at request time, from the arm tables the job keeps in Redis.

Experiment assignment is a deterministic hash of ``salt:user_id``: a ``control_share`` of users
get the uniform-random control (propensity ``1/K``), the others Thompson sampling.

UCB (``ucb``) and epsilon-greedy (``egreedy``) restore the job's bandit from its arm table
(:meth:`~online_models.bandits.mab.UCB.from_arm_table`: per-arm ``pulls, reward_sum``, the
updates being the sum of the pulls, the hyperparameters from the payload) with ``seed`` = the
request's seed, and pull once: its decision and exact propensity.

Thompson sampling here is :class:`online_models.bandits.ThompsonSampling` restored from the arm
table with ``seed`` = the request's seed and pulled once: the same Beta(prior + successes,
prior + failures) draws from ``SeedSequence(seed, spawn_key=(0, 0))``, the arm that wins the
first draw, and as propensity its (tie-group averaged) share of ``n_draws`` draws.
``tests/unit/serving/test_decisions.py`` checks the two agree. The request id fixes the seed,
so a logged decision can be recomputed from the request id and the arm table.

>>> assign_variant("u1", "salt", 0.0), assign_variant("u1", "salt", 1.0)
('treatment', 'control')
>>> stats = [(0.0, 0.0), (0.0, 0.0)]
>>> thompson_choice(stats, 1.0, 1.0, 1000, rng_for(7))[1]     # two identical posteriors: exactly 1/2
0.5
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from online_models.bandits.mab import UCB, EpsilonGreedy
from schemas.events import Decision, Event, EventType
from schemas.redis_keys import Envelope
from serving.models import DecisionRequest, DecisionResponse
from serving.store import RedisStore

__all__ = ["Decider", "DecisionError", "DecisionPolicy", "assign_variant", "rng_for", "thompson_choice"]

CONTROL = "control"
TREATMENT = "treatment"
UNIFORM = "uniform"
THOMPSON = "ts"
_SCOPE_ORDER = ("user", "segment", "global")
#: Policies decided by restoring the job's bandit from its arm table: class and hyperparameters.
_ARM_TABLE_POLICIES: dict[str, tuple[Any, tuple[str, ...]]] = {
    "ucb": (UCB, ("c",)),
    "egreedy": (EpsilonGreedy, ("epsilon", "decay")),
}


class DecisionError(ValueError):
    """No decision possible: ``reason`` and an HTTP status."""

    def __init__(self, reason: str, detail: str, status: int) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status


def assign_variant(user_id: str, salt: str, control_share: float) -> str:
    """``control`` for a ``control_share`` of users (by hash of ``salt:user_id``), else ``treatment``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2.0**64
    return CONTROL if bucket < control_share else TREATMENT


def rng_for(seed: int) -> np.random.Generator:
    """The generator a fresh ``online_models`` bandit with ``seed`` uses for its first pull."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, 0)))


def thompson_choice(
    stats: Sequence[tuple[float, float]], prior_alpha: float, prior_beta: float, n_draws: int,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """Index of the chosen arm and its propensity (``ThompsonSampling._simulate`` step for step)."""
    params = np.array([(prior_alpha + s, prior_beta + f) for s, f in stats], dtype=np.float64)
    draws = rng.beta(params[:, 0], params[:, 1], size=(n_draws, len(stats)))
    winners = np.argmax(draws, axis=1)
    shares = np.bincount(winners, minlength=len(stats)) / n_draws
    _, group = np.unique(params, axis=0, return_inverse=True)
    group = group.reshape(-1)
    group_mean = np.bincount(group, weights=shares) / np.bincount(group)
    chosen = int(winners[0])
    return chosen, float(group_mean[group[chosen]])


@dataclass(frozen=True, slots=True)
class DecisionPolicy:
    """How decisions are made (from the settings)."""

    bandit_policy: str = "ts"
    preferred_scope: str = "global"
    experiment: str = "bandit-v1"
    salt: str = "pulse"
    control_share: float = 0.1
    n_draws: int = 1000


def _scope_keys(preferred: str, user_id: str, segment: str | None) -> list[str]:
    """Scope keys to try, most specific first, from ``preferred`` down to ``global``."""
    keys = []
    for scope in _SCOPE_ORDER[_SCOPE_ORDER.index(preferred):]:
        if scope == "user":
            keys.append(f"user:{user_id}")
        elif scope == "segment" and segment:
            keys.append(f"segment:{segment}")
        elif scope == "global":
            keys.append("global")
    return keys


class Decider:
    """Chooses an arm for a :class:`DecisionRequest` and builds the impression event to log."""

    def __init__(self, store: RedisStore, policy: DecisionPolicy) -> None:
        self.store = store
        self.policy = policy

    async def decide(self, request: DecisionRequest, now_ms: int) -> tuple[DecisionResponse, Event]:
        """The decision and its impression event (``context`` carries the experiment assignment)."""
        p = self.policy
        if p.bandit_policy != THOMPSON and p.bandit_policy not in _ARM_TABLE_POLICIES:
            raise DecisionError("unsupported_policy", f"serving cannot decide with {p.bandit_policy!r}", 501)
        scopes = _scope_keys(p.preferred_scope, request.user_id, request.context.get("segment"))
        scope, envelope = scopes[-1], None
        for key, found in zip(scopes, await self.store.bandits(p.bandit_policy, scopes), strict=True):
            if found is not None:
                scope, envelope = key, found
                break
        table, prior = _arm_table(envelope)
        arms = list(request.arms) if request.arms else sorted(table)
        if not arms:
            raise DecisionError("no_arms", f"no arms in the request and no bandit parameters in scope {scope!r}", 404)
        request_id = uuid.uuid4().hex
        seed = int(request_id, 16) % 2**64
        rng = rng_for(seed)
        variant = assign_variant(request.user_id, p.salt, p.control_share)
        if variant == CONTROL:
            index, propensity, policy = int(rng.integers(len(arms))), 1.0 / len(arms), UNIFORM
        elif p.bandit_policy == THOMPSON:
            stats = [table.get(arm, (0.0, 0.0)) for arm in arms]
            index, propensity = thompson_choice(stats, prior[0], prior[1], p.n_draws, rng)
            policy = THOMPSON
        else:
            decision = _restore(p.bandit_policy, envelope, table, seed).pull(arms)
            index, propensity, policy = arms.index(decision.arm), decision.propensity, p.bandit_policy
        arm = arms[index]
        response = DecisionResponse(
            request_id=request_id, arm=arm, propensity=propensity, policy=policy, experiment=p.experiment,
            variant=variant, scope=scope, model_version=envelope.model_version if envelope else None,
        )
        context = {**request.context, "decision_point": request.decision_point, "experiment": p.experiment,
                   "variant": variant, "bandit_scope": scope}
        event = Event(
            event_id=uuid.uuid4().hex, type=EventType.IMPRESSION, user_id=request.user_id, event_time_ms=now_ms,
            item_id=arm, context=context, decision=Decision(request_id, policy, arm, propensity),
        )
        return response, event


def _restore(policy: str, envelope: Envelope | None, table: dict[str, tuple[float, float]], seed: int) -> Any:
    """The job's ``ucb``/``egreedy`` bandit from its arm table (``pulls, reward_sum`` per arm)."""
    cls, names = _ARM_TABLE_POLICIES[policy]
    hyper = (envelope.payload.get("hyperparameters") or {}) if envelope is not None else {}
    kwargs = {name: float(hyper[name]) for name in names if name in hyper}
    return cls.from_arm_table(table, n_updates=round(sum(pulls for pulls, _ in table.values())), seed=seed, **kwargs)


def _arm_table(envelope: Envelope | None) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """Per-arm statistics (ts: successes, failures; ucb/egreedy: pulls, reward_sum) and the ts Beta prior."""
    if envelope is None:
        return {}, (1.0, 1.0)
    payload: dict[str, Any] = envelope.payload
    hyper = payload.get("hyperparameters") or {}
    prior = (float(hyper.get("prior_alpha", 1.0)), float(hyper.get("prior_beta", 1.0)))
    arms = {str(arm): (float(pair[0]), float(pair[1])) for arm, pair in (payload.get("arms") or {}).items()}
    return arms, prior
