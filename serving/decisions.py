"""Bandit decisions at request time, from the arm tables the job keeps in Redis.

Experiment assignment is a deterministic hash of ``salt:user_id`` (:func:`config.experiments.bucket`):
the decisions experiment of ``PULSE_EXPERIMENTS`` when there is one, else the split of
``serving_control_share`` (a ``control`` variant, then ``treatment``). A ``uniform`` variant is
the random control (propensity ``1/K``), any other the deployment's bandit policy (``ts``,
``ucb``, ``egreedy`` or ``linucb``; settings reject another policy, the job keeps no tables for it). Users
beyond the shares get the bandit policy, with no experiment in the response.

No per-request Monte Carlo: the policy's arm distribution (the probability of choosing each
candidate arm) is computed once per arm-table content and cached
(:class:`~serving.arm_distributions.ArmDistributionCache`): Thompson sampling's exact Beta win
probabilities, UCB's and epsilon-greedy's closed forms. The request's seed
(``int(request_id, 16) mod 2**64``) then chooses: ``ts`` and the control by inverse CDF of
:func:`~online_models.bandits.distribution.uniform_from_seed`, ``ucb``/``egreedy`` exactly as the
job's bandit restored from the table with that seed pulls. The logged propensity is the cached
probability of the chosen arm, so it is exactly the probability the choice had, and a decision is
recomputed from its request id and the arm table (``Decider.decide(..., request_id=...)``).
``linucb`` depends on the request's context, so it has no cached distribution: it scores the
candidate arms for the context the impression logs (:mod:`serving.linucb_decisions`).
A scope's arm tables are reused for ``DecisionPolicy.table_max_age_s`` after they were read (the
job rewrites them at most once per flush interval), so most decisions need no Redis round trip;
the response's ``model_version`` names the table a decision used, and a replay always reads.

:func:`thompson_choice` is the learner's own per-request Monte-Carlo pull (``ThompsonSampling``
restored and pulled once, propensity a share of ``n_draws`` draws); decisions no longer use it.

>>> assign_variant("u1", "salt", 0.0), assign_variant("u1", "salt", 1.0)
('treatment', 'control')
>>> stats = [(0.0, 0.0), (0.0, 0.0)]
>>> thompson_choice(stats, 1.0, 1.0, 1000, rng_for(7))[1]     # two identical posteriors: exactly 1/2
0.5
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from config.experiments import Experiment, Variant, bucket
from online_models.bandits.distribution import uniform_from_seed
from online_models.bandits.mab import UCB, EpsilonGreedy
from schemas.events import Decision, Event, EventType
from schemas.redis_keys import Envelope
from serving.arm_distributions import ArmDistributionCache, rng_for
from serving.linucb_decisions import LINUCB, LinUCBTable, LinUCBTables
from serving.models import DecisionRequest
from serving.request_ids import random_hex
from serving.store import RedisStore

__all__ = ["Decided", "Decider", "DecisionError", "DecisionPolicy", "assign_variant", "rng_for", "thompson_choice"]

CONTROL = "control"
TREATMENT = "treatment"
UNIFORM = "uniform"
THOMPSON = "ts"
_SCOPE_ORDER = ("user", "segment", "global")
_UNKNOWN = object()
_GLOBAL_ONLY = ("global",)
_MAX_REMEMBERED_USERS = 65_536
#: Hyperparameters each policy's arm distribution depends on, with the learner's defaults.
_HYPERPARAMETERS: dict[str, dict[str, float]] = {
    THOMPSON: {"prior_alpha": 1.0, "prior_beta": 1.0},
    "ucb": {"c": UCB().c},
    "egreedy": {"epsilon": EpsilonGreedy().epsilon, "decay": EpsilonGreedy().decay},
}


class DecisionError(ValueError):
    """No decision possible: ``reason`` and an HTTP status."""

    def __init__(self, reason: str, detail: str, status: int) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status


def assign_variant(user_id: str, salt: str, control_share: float) -> str:
    """``control`` for a ``control_share`` of users (by hash of ``salt:user_id``), else ``treatment``."""
    return CONTROL if bucket(user_id, salt) < control_share else TREATMENT


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
    #: Arm distributions kept (one per policy, candidate arms and their statistics).
    cache_entries: int = 4096
    #: The decisions experiment of PULSE_EXPERIMENTS; None: the control/treatment split of the fields above.
    assignment: Experiment | None = None
    #: Seconds a scope's arm tables read from Redis are reused (0: read for every decision).
    table_max_age_s: float = 0.0

    def experiment_definition(self) -> Experiment:
        """The experiment decisions assign users by (the configured one, else the control share's split)."""
        if self.assignment is not None:
            return self.assignment
        variants = (Variant.model_construct(name=CONTROL, policy=UNIFORM, share=self.control_share),
                    Variant.model_construct(name=TREATMENT, policy=self.bandit_policy, share=1.0 - self.control_share))
        # Not validated: the name and salt are the settings' own (checked there) and any text hashed before.
        return Experiment.model_construct(name=self.experiment, surface="decisions", variants=variants,
                                          salt=self.salt)


def _scope_keys(preferred: str, user_id: str, segment: str | None) -> tuple[str, ...]:
    """Scope keys to try, most specific first, from ``preferred`` down to ``global``."""
    if preferred == "global":
        return _GLOBAL_ONLY
    keys = []
    for scope in _SCOPE_ORDER[_SCOPE_ORDER.index(preferred):]:
        if scope == "user":
            keys.append(f"user:{user_id}")
        elif scope == "segment" and segment:
            keys.append(f"segment:{segment}")
        elif scope == "global":
            keys.append("global")
    return tuple(keys)


@dataclass(slots=True)
class Decided:
    """A decision made: its answer (the fields of :class:`~serving.models.DecisionResponse`) and its impression.

    Built per decision without the model's validation, which re-checked values the decider itself
    made, and without the impression :class:`~schemas.events.Event`, which the collector builds at its
    flush (:meth:`impression`): ~5 us of a decision's warm CPU, ~4x that run cold on each paced
    request (bench/serving.py). :meth:`json` writes the model's JSON bytes.

    >>> made = Decided("r1", "a", 0.5, "ts", None, None, "global", None, "e1", "u1", 1_700_000_000_000, {})
    >>> made.json()
    b'{"request_id":"r1","arm":"a","propensity":0.5,"policy":"ts","experiment":null,"variant":null,"scope":"global","model_version":null}'
    >>> made.impression().decision
    Decision(request_id='r1', policy='ts', arm='a', propensity=0.5)
    """

    request_id: str
    arm: str
    propensity: float
    policy: str
    experiment: str | None
    variant: str | None
    scope: str
    model_version: str | None
    #: The impression's event id, user, time and context (the decision point, assignment and scope).
    event_id: str
    user_id: str
    event_time_ms: int
    context: dict[str, str]

    def json(self) -> bytes:
        """The response body, as ``DecisionResponse(...)`` would serialize it (same keys, order and numbers)."""
        return orjson.dumps({"request_id": self.request_id, "arm": self.arm, "propensity": self.propensity,
                             "policy": self.policy, "experiment": self.experiment, "variant": self.variant,
                             "scope": self.scope, "model_version": self.model_version})

    def impression(self) -> Event:
        """The impression event this decision logs."""
        return Event(event_id=self.event_id, type=EventType.IMPRESSION, user_id=self.user_id,
                     event_time_ms=self.event_time_ms, item_id=self.arm, context=self.context,
                     decision=Decision(self.request_id, self.policy, self.arm, self.propensity))


class Decider:
    """Chooses an arm for a :class:`DecisionRequest` and builds the impression event to log."""

    def __init__(self, store: RedisStore, policy: DecisionPolicy) -> None:
        self.store = store
        self.policy = policy
        self.experiment = policy.experiment_definition()
        self.distributions = ArmDistributionCache(policy.cache_entries)
        # Per scope key, the last envelope read and its parsed arm table: the store hands back the same
        # Envelope object while the stored value is unchanged, so the table is parsed once per version.
        self._tables: dict[str, tuple[Envelope | None, _ArmTable]] = {}
        # Per scope-key chain, when its tables were read and what was read (policy.table_max_age_s).
        self._reads: dict[tuple[str, ...], tuple[float, list[Envelope | None]]] = {}
        self._reading: dict[tuple[str, ...], asyncio.Future[list[Envelope | None]]] = {}
        self._variants: dict[str, Variant | None] = {}
        self._linucb = LinUCBTables(policy.cache_entries)

    async def decide(
        self, request: DecisionRequest, now_ms: int, request_id: str | None = None
    ) -> Decided:
        """The decision, with its impression (whose ``context`` carries the experiment assignment).

        ``request_id`` (32 hex digits) replays a logged decision: same arm table, same arm and propensity.
        """
        scopes = self._scopes(request)
        found = await self._read(scopes, replay=request_id is not None)
        return self._decided(request, now_ms, request_id, scopes, found)

    def decide_now(self, request: DecisionRequest, now_ms: int) -> Decided | None:
        """:meth:`decide` without waiting, when the arm tables were read less than ``table_max_age_s`` ago.

        ``None`` when they must be read first (call :meth:`decide`). Most decisions are answered
        here: without a coroutine and a task per decision (bench/serving.py).
        """
        scopes = self._scopes(request)
        known = self._reads.get(scopes)
        max_age = self.policy.table_max_age_s
        if max_age <= 0 or known is None or time.monotonic() - known[0] >= max_age:
            return None
        return self._decided(request, now_ms, None, scopes, known[1])

    def _scopes(self, request: DecisionRequest) -> tuple[str, ...]:
        if self.policy.bandit_policy not in _HYPERPARAMETERS and self.policy.bandit_policy != LINUCB:
            raise DecisionError("unsupported_policy", f"serving cannot decide with {self.policy.bandit_policy!r}", 501)
        return _scope_keys(self.policy.preferred_scope, request.user_id, request.context.get("segment"))

    def _decided(self, request: DecisionRequest, now_ms: int, request_id: str | None, scopes: tuple[str, ...],
                 found_tables: list[Envelope | None]) -> Decided:
        p = self.policy
        scope, envelope = scopes[-1], None
        for key, found in zip(scopes, found_tables, strict=True):
            if found is not None:
                scope, envelope = key, found
                break
        parsed = self._linucb_table(scope, envelope) if p.bandit_policy == LINUCB else self._arm_table(scope, envelope)
        arms = tuple(request.arms) if request.arms else parsed.arms
        if not arms:
            raise DecisionError("no_arms", f"no arms in the request and no bandit parameters in scope {scope!r}", 404)
        ids = random_hex(64)  # the request id (unless replayed) and the impression's event id
        request_id = request_id or ids[:32]
        seed = int(request_id, 16) % 2**64
        variant = self._variant(request.user_id)
        assigned = {"experiment": self.experiment.name, "variant": variant.name} if variant is not None else {}
        context = {**request.context, "decision_point": request.decision_point, **assigned, "bandit_scope": scope}
        if variant is not None and variant.policy == UNIFORM:
            index = min(int(uniform_from_seed(seed) * len(arms)), len(arms) - 1)
            propensity, policy = 1.0 / len(arms), UNIFORM
        elif isinstance(parsed, LinUCBTable):  # on the context the impression logs (serving/linucb_decisions.py)
            (index, propensity), policy = parsed.choose(arms, context, seed), LINUCB
        else:
            stats = parsed.stats if arms is parsed.arms else tuple(parsed.table.get(arm, (0.0, 0.0)) for arm in arms)
            distribution = self.distributions.get(p.bandit_policy, arms, stats, parsed.hyper, parsed.n_updates)
            (index, propensity), policy = distribution.choose(seed), p.bandit_policy
        arm = arms[index]
        experiment = self.experiment.name if variant is not None else None
        return Decided(request_id, arm, propensity, policy, experiment, variant.name if variant is not None else None,
                       scope, envelope.model_version if envelope else None, ids[32:], request.user_id, now_ms, context)

    async def _read(self, scopes: tuple[str, ...], replay: bool) -> list[Envelope | None]:
        """The arm tables of ``scopes``: from Redis, or as read less than ``table_max_age_s`` ago.

        Reused, a table needs no Redis round trip: at 2,000 decisions/s that round trip was a fifth
        of a decision's server CPU (bench/serving.py), for a table the job rewrites at most once per
        flush interval. One read per scope chain at a time: the decisions that find the tables
        expired while it is under way wait for it. A replay always reads.
        """
        max_age = self.policy.table_max_age_s
        if max_age <= 0 or replay:
            return await self.store.bandits(self.policy.bandit_policy, scopes)
        chain = scopes
        now = time.monotonic()
        known = self._reads.get(chain)
        if known is not None and now - known[0] < max_age:
            return known[1]
        reading = self._reading.get(chain)
        if reading is None:
            reading = self._reading[chain] = asyncio.ensure_future(self._refresh(chain, now))
        return await asyncio.shield(reading)  # a caller that goes away does not cancel the others' read

    async def _refresh(self, chain: tuple[str, ...], started: float) -> list[Envelope | None]:
        try:
            found = await self.store.bandits(self.policy.bandit_policy, list(chain))
        finally:
            del self._reading[chain]
        if len(self._reads) >= self.policy.cache_entries:
            self._reads.clear()  # user scopes: bounded, and the live ones come straight back
        self._reads[chain] = (started, found)
        return found

    def _variant(self, user_id: str) -> Variant | None:
        """The user's variant (the legacy split's last share may end a rounding step short of 1: treatment).

        Remembered for the last users seen (a hash per decision otherwise; the assignment never changes).
        """
        known = self._variants.get(user_id, _UNKNOWN)
        if known is not _UNKNOWN:
            return known  # type: ignore[return-value]
        variant = self.experiment.assign(user_id)
        if variant is None and self.policy.assignment is None:
            variant = self.experiment.variants[-1]
        if len(self._variants) >= _MAX_REMEMBERED_USERS:
            self._variants.clear()
        self._variants[user_id] = variant
        return variant

    def _linucb_table(self, scope: str, envelope: Envelope | None) -> LinUCBTable:
        try:
            return self._linucb.table(scope, envelope)
        except ValueError as exc:
            raise DecisionError("invalid_arm_table", f"the LinUCB table of scope {scope!r}: {exc}", 500) from None

    def _arm_table(self, scope: str, envelope: Envelope | None) -> _ArmTable:
        """The parsed table of ``envelope`` (parsed once while the scope's stored value is unchanged)."""
        known = self._tables.get(scope)
        if known is not None and known[0] is envelope:
            return known[1]
        parsed = _ArmTable.of(envelope, self.policy.bandit_policy)
        if len(self._tables) >= self.policy.cache_entries:
            self._tables.clear()  # user scopes: bounded, and the live ones come straight back
        self._tables[scope] = (envelope, parsed)
        return parsed


@dataclass(frozen=True, slots=True)
class _ArmTable:
    """One scope's arm table, parsed.

    Per-arm statistics (ts: successes, failures; ucb/egreedy: pulls, reward_sum), the policy's
    hyperparameters, the table's arms in order with their statistics, and its total pulls.
    """

    table: dict[str, tuple[float, float]]
    hyper: tuple[float, ...]
    arms: tuple[str, ...]
    stats: tuple[tuple[float, float], ...]
    n_updates: float

    @classmethod
    def of(cls, envelope: Envelope | None, policy: str) -> _ArmTable:
        defaults = _HYPERPARAMETERS[policy]
        if envelope is None:
            return cls({}, tuple(defaults.values()), (), (), 0.0)
        payload: dict[str, Any] = envelope.payload
        given = payload.get("hyperparameters") or {}
        hyper = tuple(float(given.get(name, default)) for name, default in defaults.items())
        table = {str(arm): (float(pair[0]), float(pair[1])) for arm, pair in (payload.get("arms") or {}).items()}
        arms = tuple(sorted(table))
        n_updates = sum(pulls for pulls, _ in table.values()) if policy != THOMPSON else 0.0
        return cls(table, hyper, arms, tuple(table[arm] for arm in arms), n_updates)
