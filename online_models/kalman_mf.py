"""The better explicit learner held in one process: :class:`KalmanMF`.

The parts each owner keeps and the arithmetic on them are in :mod:`online_models.kalman_mf_params`
(Kalman-filtered user and item baselines, MF on the rest, a blend learned online, clipped).
Choose it over :class:`online_models.mf.OwnerSplitMF` when the task is predicting ratings:
on MovieLens 100K its prequential RMSE is about 2 % under River's ``BiasedMF`` (``pulse eval mf``).
"""

from __future__ import annotations

import struct
from typing import Self, TypeVar

from online_models.base import ContractCase, ItemId, Learner, StateHeader, UserId
from online_models.kalman_mf_params import (
    GlobalPart,
    ItemPart,
    KalmanConfig,
    UserPart,
    initial_global,
    initial_item,
    initial_user,
    learn_step,
    predict,
)
from schemas.events import Event, EventType

__all__ = ["KalmanMF"]

_COUNT = struct.Struct("<I")
_KEY_LEN = struct.Struct("<H")


class KalmanMF(Learner):
    """Ratings from Kalman-filtered biases, a user's taste for quality and popularity, MF and a blend.

    Users and items each keep their own part (:class:`UserPart`, :class:`ItemPart`), so a job
    could keep them with their owners; the :class:`GlobalPart` is shared.

    >>> model = KalmanMF(KalmanConfig(n_factors=4))
    >>> for _ in range(10):
    ...     model.learn_one("alice", "matrix", 5.0)
    ...     model.learn_one("bob", "matrix", 3.0)
    ...     model.learn_one("alice", "notebook", 2.0)
    >>> model.predict_one("alice", "matrix") > model.predict_one("bob", "matrix")
    True
    >>> model.predict_one("carol", "matrix") <= 5.0   # clipped to the ratings seen
    True
    """

    STATE_VERSION = 1
    _HEADER = StateHeader(b"KLMF")

    def __init__(self, config: KalmanConfig | None = None) -> None:
        self.config = KalmanConfig() if config is None else config
        self._global = initial_global(self.config)
        self._users: dict[UserId, UserPart] = {}
        self._items: dict[ItemId, ItemPart] = {}

    @classmethod
    def from_config(cls, cfg: KalmanConfig) -> Self:
        """A fresh learner with the hyperparameters of ``cfg``."""
        return cls(cfg)

    # -- owner views -------------------------------------------------------------------------

    @property
    def global_part(self) -> GlobalPart:
        """The shared part of the state."""
        return self._global

    def user_part(self, user: UserId) -> UserPart:
        """The user's part (the learner's own object), or a fresh initial one if never learned from."""
        part = self._users.get(user)
        return initial_user(self.config, user) if part is None else part

    def item_part(self, item: ItemId) -> ItemPart:
        """The item's part (the learner's own object), or a fresh initial one if never learned from."""
        part = self._items.get(item)
        return initial_item(self.config, item) if part is None else part

    # -- learning and predicting -------------------------------------------------------------

    def learn_one(self, user: UserId, item: ItemId, y: float) -> None:
        """Learn one rating (test-then-train: call :meth:`predict_one` first to evaluate)."""
        u = self._users.get(user)
        if u is None:
            u = self._users[user] = initial_user(self.config, user)
        i = self._items.get(item)
        if i is None:
            i = self._items[item] = initial_item(self.config, item)
        learn_step(u, i, self._global, y, self.config)

    def predict_one(self, user: UserId, item: ItemId) -> float:
        """Predicted rating of ``user`` for ``item`` (state is not changed)."""
        return predict(self.user_part(user), self.item_part(item), self._global, self.config)

    def learn_event(self, event: Event) -> bool:
        """Learn from ``event`` if it maps to a target; return whether it did (an erase forgets the user)."""
        if event.type is EventType.ERASE:
            self._users.pop(event.user_id, None)
            return False
        y = self.config.targets.target(event)
        if y is None or event.item_id is None:
            return False
        self.learn_one(event.user_id, event.item_id, y)
        return True

    # -- state -------------------------------------------------------------------------------

    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters."""
        return self.from_config(self.config)

    def to_bytes(self) -> bytes:
        """Header, hyperparameters, global part, then users and items as (key, part) records."""
        return b"".join((
            self._HEADER.pack(self.STATE_VERSION),
            self.config.pack(),
            self._global.to_bytes(),
            _pack_parts(self._users),
            _pack_parts(self._items),
        ))

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        _, offset = cls._HEADER.unpack(data, supported=(1,))
        cfg, offset = KalmanConfig.unpack_from(data, offset)
        learner = cls.from_config(cfg)
        learner._global = GlobalPart.from_bytes(data, offset)
        offset += GlobalPart.SIZE
        learner._users, offset = _unpack_parts(data, offset, UserPart)
        learner._items, offset = _unpack_parts(data, offset, ItemPart)
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} trailing bytes after KalmanMF state")
        return learner

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        from online_models._streams import mixed_events

        def observe(learner: Learner, event: Event) -> tuple[bool, float]:
            assert isinstance(learner, KalmanMF)
            learned = learner.learn_event(event)
            return learned, learner.predict_one(event.user_id, event.item_id or "")

        return ContractCase(cls(KalmanConfig(n_factors=4, seed=seed)), mixed_events(seed), observe)


def _pack_parts(parts: dict[str, UserPart] | dict[str, ItemPart]) -> bytes:
    out = [_COUNT.pack(len(parts))]
    for key, part in parts.items():
        raw = key.encode()
        out += [_KEY_LEN.pack(len(raw)), raw, part.to_bytes()]
    return b"".join(out)


_Part = TypeVar("_Part", UserPart, ItemPart)


def _unpack_parts(data: bytes, offset: int, kind: type[_Part]) -> tuple[dict[str, _Part], int]:
    (n,) = _COUNT.unpack_from(data, offset)
    offset += _COUNT.size
    parts: dict[str, _Part] = {}
    for _ in range(n):
        (size,) = _KEY_LEN.unpack_from(data, offset)
        offset += _KEY_LEN.size
        key = data[offset : offset + size].decode()
        part = kind.from_bytes(data, offset + size)
        parts[key] = part
        offset += size + part.size()
    return parts, offset
