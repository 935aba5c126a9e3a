r"""The contract every Pulse learner keeps, and the small types learners share.

A learner is a pure object: hyperparameters in ``__init__``, learned state in private
attributes, no I/O, clock or logging inside, randomness only from ``seed``. Its state
serialises to compact versioned bytes of Pulse's own layout (never a pickle of River
objects), so a River upgrade cannot break state restored from a checkpoint.

``tests/unit/online_models/test_contract.py`` finds every concrete subclass of
:class:`Learner` and checks, from the :class:`ContractCase` it provides:

- learning and predicting do not mutate their inputs;
- ``from_bytes(to_bytes())`` gives the same bytes again and the same outputs;
- two learners built with the same seed give the same outputs;
- ``clone()`` has the same hyperparameters and no learned state;
- a state snapshot written by the pinned River version (checked in next to the test) loads.
"""

from __future__ import annotations

import abc
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from schemas.events import Event, ItemId, UserId

ArmId = str
Reward = float

__all__ = ["ArmId", "ContractCase", "ItemId", "Learner", "Reward", "StateHeader", "UserId"]


@dataclass(frozen=True)
class ContractCase:
    """What the contract suite needs to exercise one learner class.

    ``observe(learner, event)`` learns from ``event`` and returns whatever the learner
    outputs for it (a prediction, a decision, a summary): the suite compares these outputs
    between learners that must agree.
    """

    learner: Learner
    stream: Sequence[Event]
    observe: Callable[[Learner, Event], Any]


class Learner(abc.ABC):
    """Base of every learner in ``online_models``; see the module docstring for the contract."""

    #: Identifies the byte layout; bump it when the layout changes and keep reading old ones.
    STATE_VERSION: ClassVar[int] = 1

    @abc.abstractmethod
    def to_bytes(self) -> bytes:
        """Hyperparameters and learned state as compact versioned bytes."""

    @classmethod
    @abc.abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Rebuild a learner from :meth:`to_bytes` output (of this or an older version)."""

    @abc.abstractmethod
    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters and no learned state."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (Flink keyed state, process boundaries) goes through the versioned bytes,
        # never through the object's attributes, so restored state survives code changes.
        return (type(self).from_bytes, (self.to_bytes(),))

    @classmethod
    @abc.abstractmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        """A small learner, stream and observer for the contract suite."""


class StateHeader:
    r"""A 4-byte tag + 1-byte version prefix for state bytes, so a wrong blob fails loudly.

    >>> header = StateHeader(b"BMF1")
    >>> blob = header.pack(1) + b"rest"
    >>> header.unpack(blob, supported=(1,))
    (1, 5)
    >>> header.unpack(b"XXXX\x01", supported=(1,))
    Traceback (most recent call last):
    ...
    ValueError: state tag b'XXXX' is not b'BMF1'
    """

    _FORMAT = struct.Struct("<4sB")

    def __init__(self, tag: bytes) -> None:
        if len(tag) != 4:
            raise ValueError("a state tag is 4 bytes")
        self.tag = tag

    def pack(self, version: int) -> bytes:
        """The header bytes for ``version``."""
        return self._FORMAT.pack(self.tag, version)

    def unpack(self, data: bytes, supported: Sequence[int]) -> tuple[int, int]:
        """Check the header; return ``(version, offset of the body)``."""
        if len(data) < self._FORMAT.size:
            raise ValueError(f"state is {len(data)} bytes, shorter than its header")
        tag, version = self._FORMAT.unpack_from(data)
        if tag != self.tag:
            raise ValueError(f"state tag {tag!r} is not {self.tag!r}")
        if version not in supported:
            raise ValueError(f"state version {version} of {self.tag!r} is not one of {tuple(supported)}")
        return version, self._FORMAT.size
