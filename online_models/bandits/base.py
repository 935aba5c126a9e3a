"""The bandit family's small base: decisions with propensities, scopes, seeded randomness.

A bandit is a :class:`~online_models.base.Learner` with River's bandit shape
(``river/bandit/base.py``): ``pull(arms, context=None)`` chooses, ``update(arm, reward,
context=None)`` learns. Unlike River's ``pull`` it returns a :class:`BanditDecision`, the
arm *and* the probability that the policy chose it, because everything downstream of a
decision (the logged ``Decision`` of ``event.avsc``, off-policy evaluation) needs that
propensity. ``arm_probabilities(arms, context)`` gives the whole distribution over
``arms`` without pulling; it does not change the learner.

Randomness: every draw of ``pull`` comes from a numpy ``Generator`` seeded with
``(seed, request counter)``, where the counter is the number of pulls so far and is part of
the serialised state, so a learner restored from bytes continues the same sequence of
decisions. ``arm_probabilities`` (Monte-Carlo for Thompson sampling) draws from
``(seed, pulls, updates)`` on a separate stream: it is a pure function of the state.

Scope: the job keeps one bandit state per *scope key* (:func:`scope_key`): one for
everybody, one per segment (``event.context["segment"]``) or one per user.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from online_models.base import ArmId, Learner, Reward
from schemas.events import Decision, Event

__all__ = [
    "Bandit",
    "BanditDecision",
    "BanditScope",
    "Context",
    "scope_key",
]

#: What a contextual bandit reads; string values are categorical, numbers are numeric.
Context = Mapping[str, str | float]

_STREAM_PULL = 0
_STREAM_PROBABILITIES = 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_COUNTERS = struct.Struct("<QQ")  # pulls, updates


class BanditScope(StrEnum):
    """Which events share one bandit state."""

    GLOBAL = "global"
    SEGMENT = "segment"
    USER = "user"


def scope_key(scope: BanditScope, event: Event) -> str:
    """The key of the bandit state that ``event`` reads and updates under ``scope``.

    >>> from schemas.events import EventType
    >>> e = Event(event_id="e", type=EventType.IMPRESSION, user_id="u1", event_time_ms=0,
    ...           item_id="3", context={"segment": "men"})
    >>> [scope_key(s, e) for s in BanditScope]
    ['global', 'segment:men', 'user:u1']
    >>> scope_key(BanditScope.SEGMENT, Event(event_id="e", type=EventType.CLICK, user_id="u",
    ...                                      event_time_ms=0))
    'segment:'
    """
    if scope is BanditScope.GLOBAL:
        return "global"
    if scope is BanditScope.SEGMENT:
        return "segment:" + event.context.get("segment", "")
    return "user:" + event.user_id


@dataclass(frozen=True, slots=True)
class BanditDecision:
    """An arm chosen by a bandit and the probability that the bandit chose it."""

    arm: ArmId
    propensity: float

    def to_schema(self, request_id: str, policy: str) -> Decision:
        """The ``Decision`` record an impression event carries."""
        return Decision(request_id=request_id, policy=policy, arm=self.arm, propensity=self.propensity)


class Bandit(Learner):
    """Base of Pulse's bandits; see the module docstring.

    Subclasses implement :meth:`arm_probabilities`, :meth:`_choose` and :meth:`_learn`, and
    the byte layout of their hyperparameters and per-arm statistics.
    """

    def __init__(self, seed: int) -> None:
        if not 0 <= seed < 2**64:
            raise ValueError("seed is an integer in [0, 2**64)")
        self.seed = seed
        self._pulls = 0
        self._updates = 0

    # -- the River-shaped API -------------------------------------------------------------

    def pull(self, arms: Sequence[ArmId], context: Context | None = None) -> BanditDecision:
        """Choose one of ``arms`` (for ``context``) and say with which probability."""
        if not arms:
            raise ValueError("pull needs at least one arm")
        if len(set(arms)) != len(arms):
            raise ValueError("arms must be distinct")
        rng = self._rng(_STREAM_PULL, self._pulls)
        self._pulls += 1
        return self._choose(arms, context, rng)

    def update(self, arm: ArmId, reward: Reward, context: Context | None = None, count: int = 1) -> None:
        """Learn that ``arm`` earned ``reward`` (in ``context``); ``count`` times, as that many calls would.

        ``count`` carries feedback that arrives together (a restored job's impressions of one arm
        expiring on one watermark) in one message instead of one each.
        """
        if count < 1:
            raise ValueError(f"count is at least 1, got {count}")
        reward = float(reward)
        for _ in range(count):
            self._learn(arm, reward, context)
        self._updates += count

    @abc.abstractmethod
    def arm_probabilities(self, arms: Sequence[ArmId], context: Context | None = None) -> dict[ArmId, float]:
        """The probability that :meth:`pull` would choose each of ``arms``; sums to 1."""

    @abc.abstractmethod
    def _choose(self, arms: Sequence[ArmId], context: Context | None, rng: np.random.Generator) -> BanditDecision:
        """Choose with ``rng`` (already seeded for this request)."""

    @abc.abstractmethod
    def _learn(self, arm: ArmId, reward: float, context: Context | None) -> None:
        """Update the statistics of ``arm``."""

    # -- helpers shared by the family ------------------------------------------------------

    def _rng(self, stream: int, *counters: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(stream, *counters)))

    def _probability_rng(self) -> np.random.Generator:
        return self._rng(_STREAM_PROBABILITIES, self._pulls, self._updates)

    def _pack_counters(self) -> bytes:
        return _COUNTERS.pack(self._pulls, self._updates)

    def _unpack_counters(self, data: bytes, offset: int) -> int:
        self._pulls, self._updates = _COUNTERS.unpack_from(data, offset)
        return offset + _COUNTERS.size


def tied_argmax(scores: Mapping[ArmId, float]) -> list[ArmId]:
    """The arms with the largest score, in the order of ``scores``.

    >>> tied_argmax({"a": 1.0, "b": 2.0, "c": 2.0})
    ['b', 'c']
    """
    best = max(scores.values())
    return [arm for arm, score in scores.items() if score == best]


def pack_arm(arm: ArmId) -> bytes:
    """An arm id as a u16 length and its UTF-8 bytes."""
    raw = arm.encode()
    return _U16.pack(len(raw)) + raw


def unpack_arm(data: bytes, offset: int) -> tuple[ArmId, int]:
    """Read what :func:`pack_arm` wrote; return the arm and the next offset."""
    (length,) = _U16.unpack_from(data, offset)
    start = offset + _U16.size
    end = start + length
    if end > len(data):
        raise ValueError("state ends inside an arm id")
    return data[start:end].decode(), end


def pack_count(n: int) -> bytes:
    """A u32 count."""
    return _U32.pack(n)


def unpack_count(data: bytes, offset: int) -> tuple[int, int]:
    """Read what :func:`pack_count` wrote; return the count and the next offset."""
    (n,) = _U32.unpack_from(data, offset)
    return n, offset + _U32.size


def check_consumed(data: bytes, offset: int) -> None:
    """Fail loudly when state bytes have trailing garbage."""
    if offset != len(data):
        raise ValueError(f"state has {len(data) - offset} unexpected trailing bytes")
