"""Exponentially time-decayed item popularity, overall and per segment, for cold-start fallback.

A weight ``w`` seen at event time ``t`` counts ``w * 2 ** (-(now - t) / half_life)`` at time
``now``. Counts are stored scaled to a landmark time (``w * 2 ** ((t - landmark) / half_life)``)
so an event touches one number and ranking needs no decay pass; the landmark moves forward
(rescaling everything, dropping counts that decayed to almost nothing) every 64 half-lives.

>>> from schemas.events import Event, EventType
>>> pop = DecayedPopularity(half_life_ms=1_000)
>>> for k, item in enumerate(["a", "b", "b"]):
...     _ = pop.learn_event(Event(f"e{k}", EventType.VIEW, "u", k * 1_000, item_id=item,
...                               context={"segment": "fr"}))
>>> pop.top_n(2, segment="fr")
[('b', 1.5), ('a', 0.25)]
>>> pop.top_n(1, at_ms=3_000)
[('b', 0.75)]
"""

from __future__ import annotations

import heapq
import struct
from dataclasses import astuple, dataclass
from typing import Self

import numpy as np

from online_models.base import ContractCase, ItemId, Learner, StateHeader
from schemas.events import SYMBOL_OF, Event, EventType

__all__ = [
    "ALL",
    "DecayedCount",
    "DecayedPopularity",
    "InteractionWeights",
    "add_decayed",
    "decay_factor",
    "decayed_value",
    "epoch_landmark",
    "forward_weight",
]

#: The segment every event counts into.
ALL = "*"
_RESCALE_HALF_LIVES = 64
_HEADER = StateHeader(b"POPD")
_CONFIG = struct.Struct("<qd5d")  # half_life_ms, prune_below, weights
_CLOCK = struct.Struct("<?qq")  # has landmark, landmark_ms, latest_ms
_LEN = struct.Struct("<H")
_COUNT = struct.Struct("<I")
_F64 = np.dtype("<f8")


def forward_weight(weight: float, time_ms: int, landmark_ms: int, half_life_ms: int) -> float:
    """``weight`` scaled up to the landmark's frame (forward decay): sums stay comparable.

    >>> forward_weight(1.0, 2_000, 0, 1_000)
    4.0
    """
    return float(weight * 2.0 ** ((time_ms - landmark_ms) / half_life_ms))


def decay_factor(landmark_ms: int, at_ms: int, half_life_ms: int) -> float:
    """What turns a forward-decayed sum into the decayed count at ``at_ms``.

    >>> forward_weight(1.0, 2_000, 0, 1_000) * decay_factor(0, 3_000, 1_000)
    0.5
    """
    return float(2.0 ** ((landmark_ms - at_ms) / half_life_ms))


#: One item's count in one segment: (landmark ms, sum of forward-decayed weights in its frame).
DecayedCount = tuple[int, float]


def epoch_landmark(time_ms: int, half_life_ms: int) -> int:
    """The landmark of the epoch (64 half-lives) holding ``time_ms``: forward weights stay in float range.

    >>> epoch_landmark(130_000, 1_000), epoch_landmark(63_999, 1_000)
    (128000, 0)
    """
    span = _RESCALE_HALF_LIVES * half_life_ms
    return time_ms - time_ms % span


def add_decayed(count: DecayedCount | None, weight: float, time_ms: int, half_life_ms: int) -> DecayedCount:
    """``count`` after adding ``weight`` seen at ``time_ms``; moves to a later epoch's landmark when needed.

    Counts kept this way need no shared landmark: whoever holds one can update it alone (the
    job's item owners do), and two counts compare after :func:`decayed_value` at the same time.

    >>> c = add_decayed(None, 1.0, 0, 1_000)
    >>> c = add_decayed(c, 1.0, 1_000, 1_000)
    >>> decayed_value(c, 1_000, 1_000)
    1.5
    >>> decayed_value(add_decayed(c, 1.0, 200_000, 1_000), 200_000, 1_000)
    1.0
    """
    landmark = epoch_landmark(time_ms, half_life_ms)
    total = 0.0
    if count is not None:
        held, total = count
        if held >= landmark:  # same epoch, or an out-of-order weight from an earlier one
            landmark = held
        else:
            total *= decay_factor(held, landmark, half_life_ms)  # old frame -> new frame
    return landmark, total + forward_weight(weight, time_ms, landmark, half_life_ms)


def decayed_value(count: DecayedCount, at_ms: int, half_life_ms: int) -> float:
    """The decayed count at ``at_ms``."""
    landmark, total = count
    return total * decay_factor(landmark, at_ms, half_life_ms)


@dataclass(frozen=True)
class InteractionWeights:
    """How much one event of each type counts; impressions and erasures count nothing."""

    view: float = 1.0
    click: float = 2.0
    add_to_cart: float = 3.0
    purchase: float = 4.0
    rating: float = 1.0

    def weight(self, kind: EventType) -> float:
        """The weight of an event of type ``kind``."""
        return float(getattr(self, SYMBOL_OF[kind], 0.0))


class DecayedPopularity(Learner):
    """Time-decayed counts per item, overall (segment ``"*"``) and per ``context[segment_key]``.

    >>> pop = DecayedPopularity(half_life_ms=60_000)
    >>> pop.learn_one("i1", time_ms=0, weight=4.0, segments=[ALL, "de"])
    >>> pop.learn_one("i2", time_ms=60_000, weight=1.0, segments=[ALL])
    >>> pop.top_n(5), pop.top_n(5, segment="de", at_ms=120_000)
    ([('i1', 2.0), ('i2', 1.0)], [('i1', 1.0)])
    """

    STATE_VERSION = 1

    def __init__(
        self,
        half_life_ms: int = 24 * 3600 * 1000,
        segment_key: str = "segment",
        weights: InteractionWeights | None = None,
        prune_below: float = 1e-3,
    ) -> None:
        if half_life_ms <= 0:
            raise ValueError("half_life_ms must be positive")
        self.half_life_ms = half_life_ms
        self.segment_key = segment_key
        self.weights = weights or InteractionWeights()
        self.prune_below = prune_below
        self._landmark_ms: int | None = None
        self._latest_ms = 0
        self._counts: dict[str, dict[ItemId, float]] = {}

    def learn_event(self, event: Event) -> bool:
        """Count ``event`` into its segment and ``"*"``; return whether it counted."""
        weight = self.weights.weight(event.type)
        if event.item_id is None or weight == 0.0:
            return False
        segments = [ALL]
        segment = event.context.get(self.segment_key)
        if segment is not None and segment != ALL:
            segments.append(segment)
        self.learn_one(event.item_id, event.event_time_ms, weight, segments)
        return True

    def learn_one(self, item: ItemId, time_ms: int, weight: float, segments: list[str]) -> None:
        """Add ``weight`` at event time ``time_ms`` to ``item`` in each of ``segments``."""
        if self._landmark_ms is None:
            self._landmark_ms = self._latest_ms = time_ms
        self._latest_ms = max(self._latest_ms, time_ms)
        if (time_ms - self._landmark_ms) > _RESCALE_HALF_LIVES * self.half_life_ms:
            self._move_landmark(time_ms)
        scaled = forward_weight(weight, time_ms, self._landmark_ms, self.half_life_ms)
        for segment in segments:
            counts = self._counts.setdefault(segment, {})
            counts[item] = counts.get(item, 0.0) + scaled

    def _move_landmark(self, landmark_ms: int) -> None:
        assert self._landmark_ms is not None
        factor = 2.0 ** ((self._landmark_ms - landmark_ms) / self.half_life_ms)
        for segment, counts in list(self._counts.items()):
            kept = {item: c * factor for item, c in counts.items() if c * factor >= self.prune_below}
            if kept:
                self._counts[segment] = kept
            else:
                del self._counts[segment]
        self._landmark_ms = landmark_ms

    def _decay_to(self, at_ms: int | None) -> float:
        if self._landmark_ms is None:
            return 0.0
        at = self._latest_ms if at_ms is None else at_ms
        return decay_factor(self._landmark_ms, at, self.half_life_ms)

    def score(self, item: ItemId, segment: str = ALL, at_ms: int | None = None) -> float:
        """Decayed count of ``item`` in ``segment`` at ``at_ms`` (default: latest event time seen)."""
        return self._counts.get(segment, {}).get(item, 0.0) * self._decay_to(at_ms)

    def top_n(
        self, n: int, segment: str = ALL, at_ms: int | None = None, exclude: frozenset[ItemId] = frozenset()
    ) -> list[tuple[ItemId, float]]:
        """The ``n`` most popular items of ``segment`` with decayed counts (ties: item id order)."""
        counts = self._counts.get(segment, {})
        best = heapq.nsmallest(
            n, ((item, c) for item, c in counts.items() if item not in exclude), key=lambda kv: (-kv[1], kv[0])
        )
        decay = self._decay_to(at_ms)
        return [(item, c * decay) for item, c in best]

    def segments(self) -> list[str]:
        """Segments with counts, ``"*"`` first."""
        return list(self._counts)

    def clone(self) -> Self:
        """A fresh learner with the same hyperparameters."""
        return type(self)(self.half_life_ms, self.segment_key, self.weights, self.prune_below)

    def to_bytes(self) -> bytes:
        """Header, hyperparameters, landmark, then per segment its item keys and raw float64 counts."""
        parts = [
            _HEADER.pack(self.STATE_VERSION),
            _CONFIG.pack(self.half_life_ms, self.prune_below, *astuple(self.weights)),
            _text(self.segment_key),
            _CLOCK.pack(self._landmark_ms is not None, self._landmark_ms or 0, self._latest_ms),
            _COUNT.pack(len(self._counts)),
        ]
        for segment, counts in self._counts.items():
            parts += [_text(segment), _COUNT.pack(len(counts)), *map(_text, counts)]
            parts.append(np.fromiter(counts.values(), _F64, len(counts)).tobytes())
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""
        _, offset = _HEADER.unpack(data, supported=(1,))
        half_life_ms, prune_below, *weights = _CONFIG.unpack_from(data, offset)
        segment_key, offset = _read_text(data, offset + _CONFIG.size)
        learner = cls(half_life_ms, segment_key, InteractionWeights(*weights), prune_below)
        has_landmark, landmark_ms, learner._latest_ms = _CLOCK.unpack_from(data, offset)
        learner._landmark_ms = landmark_ms if has_landmark else None
        (n_segments,) = _COUNT.unpack_from(data, offset + _CLOCK.size)
        offset += _CLOCK.size + _COUNT.size
        for _ in range(n_segments):
            segment, offset = _read_text(data, offset)
            (n,) = _COUNT.unpack_from(data, offset)
            offset += _COUNT.size
            items = []
            for _ in range(n):
                item, offset = _read_text(data, offset)
                items.append(item)
            values = np.frombuffer(data, _F64, n, offset).tolist()
            offset += 8 * n
            learner._counts[segment] = dict(zip(items, values, strict=True))
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} trailing bytes after DecayedPopularity state")
        return learner

    @classmethod
    def _contract_case(cls, seed: int) -> ContractCase:
        from online_models._streams import mixed_events

        def observe(learner: Learner, event: Event) -> tuple[bool, list[tuple[str, float]]]:
            assert isinstance(learner, DecayedPopularity)
            counted = learner.learn_event(event)
            return counted, learner.top_n(3, segment=event.context.get("segment", ALL))

        return ContractCase(cls(half_life_ms=600_000), mixed_events(seed), observe)


def _text(text: str) -> bytes:
    raw = text.encode()
    return _LEN.pack(len(raw)) + raw


def _read_text(data: bytes, offset: int) -> tuple[str, int]:
    (size,) = _LEN.unpack_from(data, offset)
    start = offset + _LEN.size
    return data[start : start + size].decode(), start + size
