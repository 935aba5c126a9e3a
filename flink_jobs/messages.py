"""What the job's operators send each other (pickled between Python operators).

Each is a small frozen dataclass; ``event_time_ms`` is the event time that produced it, which
the Redis sink uses to refuse writes that would move a key backwards in event time. Events go
from decode to the user stage as their plain fields (:func:`event_bytes`, :func:`event_of`).
"""

from __future__ import annotations

import marshal
import pickle
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from schemas import Event, ServedList
from schemas.events import EventFields, pickled_as_call, quick_init

_SNAPSHOT = struct.Struct("<qqHH")  # version, owner time ms, item id length, ack count
_ACK = struct.Struct("<Hq")  # sender subtask, last seq applied
_PICKLED = pickle.PROTO  # the first byte of anything pickled with protocol 2 or newer


def event_bytes(fields: EventFields) -> bytes:
    """A decoded event as decode sends it to the user stage: its plain fields, marshalled.

    ``marshal`` (the interpreter's own format for plain values) writes and reads them in ~1.6 us
    against ~8.5 us for pickling the :class:`~schemas.Event` (ADR 0007). Both stages run the same
    interpreter, and no such bytes outlive the job: checkpoints are aligned and the batchers empty
    before every barrier, so none is in a checkpoint or savepoint.

    >>> from schemas import EventType
    >>> event = Event("e1", EventType.CLICK, "u1", 1_700_000_000_000, item_id="i9", context={"segment": "s"})
    >>> event_of(event_bytes(event.to_fields())) == event
    True
    """
    return marshal.dumps(fields)


def event_of(value: bytes) -> Event | ServedList:
    """What decode sent the user stage: an event (:func:`event_bytes`) or a served list (pickled).

    >>> event_of(pickle.dumps(ServedList("r1", "u1", 1, "home", "model", "mf", "p", None, "x", "a", None, ())))
    ... # doctest: +ELLIPSIS
    ServedList(request_id='r1', ...)
    """
    if value[0] == _PICKLED[0]:  # marshal starts a tuple with b"(" or b")" (with or without its ref flag)
        return pickle.loads(value)  # type: ignore[no-any-return]
    return Event.from_fields(marshal.loads(value))


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class RedisWrite:
    """Set ``key`` to ``payload`` (an envelope carries event time, write time, model version)."""

    key: str
    event_time_ms: int
    payload: Any
    route: str  # what picks the sink shard: the user id for user keys, else the key


@pickled_as_call
@dataclass(frozen=True, slots=True)
class SetMember:
    """A :class:`RedisWrite` payload: add ``member`` to the set at the write's key (a user's blocks).

    Adding twice is adding once, so a replay after recovery needs no event-time guard.
    """

    member: str


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class RedisWrites:
    """Several writes routed together (one message instead of one per key: each costs a Python call)."""

    writes: tuple[RedisWrite, ...]
    route: str


@pickled_as_call
@dataclass(frozen=True, slots=True)
class EraseUser:
    """Delete every Redis key of ``user_id`` (an erase event was processed)."""

    user_id: str
    event_time_ms: int


@pickled_as_call
@dataclass(frozen=True, slots=True)
class ForgetScope:
    """Forget the bandit state of ``scope_key`` and delete its Redis key (its user was erased)."""

    scope_key: str
    event_time_ms: int


@pickled_as_call
@dataclass(frozen=True, slots=True)
class DeleteKeys:
    """Delete ``keys``; pending writes routed by ``route`` up to ``event_time_ms`` are dropped first."""

    keys: tuple[str, ...]
    event_time_ms: int
    route: str


@pickled_as_call
@dataclass(frozen=True, slots=True)
class ClosedSession:
    """A session closed: its summary as JSON, for the sessions topic."""

    summary_json: bytes


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class ItemTouch:
    """What one event did to an item, for the item's owner: its MF update and its popularity weight.

    One message per event and item (an update and a popularity hit used to be separate messages,
    and every message between operators is a crossing between the JVM and Python).
    """

    item_id: str
    event_time_ms: int
    weight: float  # popularity weight of the event type (0: not counted)
    segment: str | None  # the event's segment; the weight also counts in the "all" segment
    d_bias: float = 0.0
    d_factors: bytes | None = None  # float64 little-endian; None: the event was not learned from
    sender: int = 0  # index of the user-side subtask that made the update
    seq: int = 0  # that subtask's running number of updates to this item


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class ItemTouches:
    """What one micro-batch of a user-side subtask did to an item: the sum of its MF updates, each popularity hit.

    The user stage sends one per item and batch instead of one :class:`ItemTouch` per event (fewer
    messages to pickle, route and apply). Updates add up exactly as the owner applied them one by
    one, up to float rounding; popularity hits stay one by one, since decay depends on each time.

    >>> import numpy as np
    >>> d = np.ones(2).astype("<f8").tobytes()
    >>> (merged,) = ItemTouches.merge([ItemTouch("i", 5, 1.0, "de", 0.5, d, 0, 1),
    ...                                ItemTouch("i", 4, 2.0, None), ItemTouch("i", 6, 0.0, None, 0.25, d, 0, 2)])
    >>> merged.event_time_ms, merged.hits, merged.d_bias, merged.updates, merged.seq
    (6, ((1.0, 'de', 5), (2.0, None, 4)), 0.75, 2, 2)
    >>> np.frombuffer(merged.d_factors, dtype="<f8").tolist()
    [2.0, 2.0]
    """

    item_id: str
    event_time_ms: int  # the newest of the batch's touches
    hits: tuple[tuple[float, str | None, int], ...]  # (weight, segment, event time) of each counted event, in order
    d_bias: float = 0.0
    d_factors: bytes | None = None  # float64 little-endian, summed; None: nothing learned
    updates: int = 0  # how many updates the sums hold
    sender: int = 0
    seq: int = 0  # the sender's number of its last update to this item in the sums

    @classmethod
    def merge(cls, touches: Iterable[ItemTouch]) -> list[ItemTouches]:
        """One message per item, in the order items were first touched."""
        by_item: dict[str, list[ItemTouch]] = {}
        for touch in touches:
            by_item.setdefault(touch.item_id, []).append(touch)
        merged = []
        for item_id, group in by_item.items():
            learned = [t for t in group if t.d_factors is not None]
            d_factors = None
            if learned:
                d_factors = sum(np.frombuffer(t.d_factors, dtype="<f8") for t in learned if t.d_factors is not None)
            merged.append(cls(
                item_id, max(t.event_time_ms for t in group),
                tuple((t.weight, t.segment, t.event_time_ms) for t in group if t.weight > 0),
                sum(t.d_bias for t in learned), None if d_factors is None else np.asarray(d_factors).tobytes(),
                len(learned), learned[-1].sender if learned else 0, learned[-1].seq if learned else 0,
            ))
        return merged


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class BanditFeedback:
    """An impression resolved: ``reward`` 1 (its click came) or 0 (it expired).

    ``context``: the impression's context entries a contextual bandit reads (LinUCB's features), else empty.
    ``count``: how many impressions of this scope and arm it stands for (a user's impressions that
    expired together, with no context, are one message), ``event_time_ms`` the latest of theirs.
    """

    scope_key: str
    arm: str
    reward: float
    event_time_ms: int
    context: tuple[tuple[str, str], ...] = ()
    count: int = 1


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class PopularityCount:
    """An item's decayed count in ``segment`` as its owner holds it (replaces the previous one)."""

    segment: str
    item_id: str
    landmark_ms: int
    count: float  # forward-decayed sum in the landmark's frame (online_models.popularity.DecayedCount)
    event_time_ms: int


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class ModelProgress:
    """Prequential error and join counters since the previous report, from one user-side subtask."""

    learned: int
    squared_error: float
    absolute_error: float
    rewards_matched: int
    rewards_unmatched: int
    late_events: int
    event_time_ms: int
    judged: int = 0  # positives the implicit learner ranked before learning them
    hits: int = 0  # of those, in its top k


@pickled_as_call
@dataclass(frozen=True, slots=True)
class DeadLetterCounts:
    """Dead letters of one decode batch by reason (for the ``model:dlq`` key the console reads)."""

    by_reason: dict[str, int]
    event_time_ms: int  # wall clock at decode: a dead letter has no trustworthy event time


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class ItemSnapshot:
    """The owner's item parameters after ``version`` updates, as of ``owner_time_ms`` (wall clock).

    ``acks`` says, per sender subtask, the ``seq`` of its last update the owner has applied, so
    a sender can add back its own updates the snapshot does not include yet. Travels owner ->
    Kafka -> every user-side subtask (broadcast), as bytes.

    >>> snap = ItemSnapshot("i1", 7, 1_700_000_000_000, b"params", {0: 5, 1: 2})
    >>> ItemSnapshot.from_bytes(snap.to_bytes()) == snap
    True
    """

    item_id: str
    version: int
    owner_time_ms: int
    params: bytes  # online_models.mf.ItemParams.to_bytes()
    acks: dict[int, int]

    def to_bytes(self) -> bytes:
        """Fixed header, UTF-8 item id, acks, then the parameter bytes."""
        item = self.item_id.encode()
        acks = b"".join(_ACK.pack(sender, seq) for sender, seq in sorted(self.acks.items()))
        return _SNAPSHOT.pack(self.version, self.owner_time_ms, len(item), len(self.acks)) + item + acks + self.params

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemSnapshot:
        """Inverse of :meth:`to_bytes`."""
        version, owner_time_ms, n, n_acks = _SNAPSHOT.unpack_from(data)
        at = _SNAPSHOT.size
        item = bytes(data[at : at + n]).decode()
        at += n
        acks = dict(_ACK.unpack_from(data, at + i * _ACK.size) for i in range(n_acks))
        at += n_acks * _ACK.size
        return cls(item, version, owner_time_ms, bytes(data[at:]), acks)
