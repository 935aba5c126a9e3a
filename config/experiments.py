"""Experiments as configuration: named experiments, their variants and traffic shares, and the assignment.

An experiment runs on one *surface*: ``recommendations`` (a variant is a recommendation policy:
``mf``, the live model with popularity for cold users, or ``popularity``) or ``decisions`` (a
variant is a decision policy: ``uniform``, the random control, or a bandit policy ``ts``,
``ucb``, ``egreedy``, ``linucb``). A user's variant is a pure function of the experiment's salt and the user
id: the first 8 bytes of ``sha256("<salt>:<user_id>")`` as a number in [0, 1) fall into the
variants' shares, laid end to end in the order given. Shares may sum to less than 1: the users
beyond them are not in the experiment (served as without one). At most one experiment per surface.

Settings read them from ``PULSE_EXPERIMENTS`` (JSON; :func:`parse_experiments`), and a bad
definition is one line naming the experiment and what is wrong (:class:`ExperimentConfigError`).

>>> home = Experiment(name="home-recs", surface="recommendations", variants=[
...     Variant(name="A", policy="mf", share=0.5), Variant(name="B", policy="popularity", share=0.5)])
>>> home.assign("u1").name, home.assign("u1").name == home.assign("u1").name
('B', True)
>>> bucket("u1", "pulse") < 1.0
True
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, model_validator

__all__ = [
    "DECISION_POLICIES",
    "RECOMMENDATION_POLICIES",
    "Experiment",
    "ExperimentConfigError",
    "Surface",
    "Variant",
    "bucket",
    "parse_experiments",
]

Surface = Literal["recommendations", "decisions"]
#: What a variant of each surface may be (serving/recommendations.py, serving/decisions.py implement them).
RECOMMENDATION_POLICIES = frozenset({"mf", "popularity"})
DECISION_POLICIES = frozenset({"uniform", "ts", "ucb", "egreedy", "linucb"})
_POLICIES: dict[str, frozenset[str]] = {"recommendations": RECOMMENDATION_POLICIES, "decisions": DECISION_POLICIES}
#: Names go into Kafka records, metric labels and Redis-safe ids: the serving API's id characters.
Name = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@+=-]+$")]
_SHARE_SLACK = 1e-9  # 0.1 + 0.2 + 0.7 is 1.0000000000000002


class ExperimentConfigError(RuntimeError):
    """A bad experiment definition; the message is one line (not a ValueError: pydantic would wrap it)."""


def bucket(user_id: str, salt: str) -> float:
    """The user's point in [0, 1) for ``salt``: the first 8 bytes of ``sha256(salt:user_id)`` over 2**64."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Frozen):
    """One arm of an experiment: its name, the policy it serves and its share of the users."""

    name: Name
    policy: Name = Field(description="recommendations: mf | popularity; decisions: uniform, ts, ucb, egreedy, linucb")
    share: float = Field(ge=0.0, le=1.0, description="Share of all users (hashed) served this variant")


class Experiment(_Frozen):
    """A named experiment on one surface; ``salt`` (default: the name) makes its assignment its own."""

    name: Name
    surface: Surface
    variants: tuple[Variant, ...] = Field(min_length=1)
    salt: str = Field("", description="Hash salt; empty = the name (a new salt reshuffles every user)")

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names repeat: {names}")
        allowed = _POLICIES[self.surface]
        for variant in self.variants:
            if variant.policy not in allowed:
                raise ValueError(f"variant {variant.name!r}: policy {variant.policy!r} is not a {self.surface} "
                                 f"policy ({', '.join(sorted(allowed))})")
        total = math.fsum(v.share for v in self.variants)
        if total > 1.0 + _SHARE_SLACK:
            raise ValueError(f"variant shares sum to {total:g}, more than 1")
        if total <= 0.0:
            raise ValueError("variant shares sum to 0: nobody is in the experiment")
        return self

    @property
    def hash_salt(self) -> str:
        """The salt the assignment hashes with."""
        return self.salt or self.name

    def assign(self, user_id: str) -> Variant | None:
        """The user's variant, or ``None`` when the user falls beyond the shares (not in the experiment)."""
        point = bucket(user_id, self.hash_salt)
        edge = 0.0
        for variant in self.variants:
            edge += variant.share
            if point < edge:
                return variant
        return None


_EXPERIMENTS = TypeAdapter(tuple[Experiment, ...])


def parse_experiments(value: Any) -> tuple[Experiment, ...]:
    """Experiments from JSON text (``PULSE_EXPERIMENTS``) or already-parsed data; one-line error when bad.

    >>> ts = '[{"name": "x", "surface": "%s", "variants": [{"name": "a", "policy": "ts", "share": 1}]}]'
    >>> parse_experiments(ts % "decisions")[0].name
    'x'
    >>> parse_experiments(ts % "recommendations")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    config.experiments.ExperimentConfigError: PULSE_EXPERIMENTS: experiment 'x': variant 'a': policy 'ts' is not ...
    """
    if value is None or value == "":
        return ()
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ExperimentConfigError(f"PULSE_EXPERIMENTS: not JSON ({exc})") from None
    if isinstance(value, dict):
        value = [value]
    try:
        experiments = _EXPERIMENTS.validate_python(value)
    except ValidationError as exc:
        raise ExperimentConfigError(f"PULSE_EXPERIMENTS: {_first_error(value, exc)}") from None
    seen: dict[str, str] = {}
    for experiment in experiments:
        if experiment.surface in seen:
            raise ExperimentConfigError(f"PULSE_EXPERIMENTS: experiments {seen[experiment.surface]!r} and "
                                        f"{experiment.name!r} both run on {experiment.surface} (one per surface)")
        seen[experiment.surface] = experiment.name
    return experiments


def _first_error(value: Any, exc: ValidationError) -> str:
    """``experiment 'name': <what is wrong>`` for the first error pydantic found."""
    error = exc.errors()[0]
    location = list(error.get("loc", ()))
    where = ""
    if location and isinstance(location[0], int) and isinstance(value, list | tuple) and location[0] < len(value):
        entry = value[location[0]]
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"experiment {name!r}: " if name else f"experiment #{location[0] + 1}: "
        location = location[1:]
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    field = ".".join(str(part) for part in location)
    return f"{where}{field + ': ' if field else ''}{message}"
