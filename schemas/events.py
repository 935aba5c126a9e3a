"""Frozen dataclasses mirroring ``event_v2.avsc`` (the newest events schema) and ``item.avsc``.

These are what the rest of Pulse sees: producers build them, the codec turns them into
framed Avro and back, learners and the session step consume them.

>>> e = Event(event_id="e1", type=EventType.CLICK, user_id="u1", item_id="i9",
...           event_time_ms=1_700_000_000_000)
>>> e.type.value, e.value, dict(e.context)
('click', None, {})
>>> Event("e2", EventType.BLOCK, "u1", 1_700_000_000_000, category="shoes").to_avro()["category"]
'shoes'
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

UserId = str
ItemId = str
_T = TypeVar("_T")


class EventType(StrEnum):
    """The ``EventType`` enum of the events schema; the string value is the Avro symbol.

    Members are only ever appended, in the schema's symbol order (their position is also their
    one-byte code in Redis values, :mod:`schemas.compact_bytes`). ``BLOCK`` is new in version 2.
    """

    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    IMPRESSION = "impression"
    ERASE = "erase"
    #: "Not interested": the user blocks ``item_id`` or ``category`` (exactly one). Version 2.
    #: Not learned from, so in none of the learners' sets (and not in ITEM_EVENT_TYPES: a block
    #: of a category has no item).
    BLOCK = "block"


#: Event types that are about one item and so must carry ``item_id``.
ITEM_EVENT_TYPES = frozenset(
    {
        EventType.VIEW,
        EventType.CLICK,
        EventType.ADD_TO_CART,
        EventType.PURCHASE,
        EventType.RATING,
        EventType.IMPRESSION,
    }
)


def pickled_as_call(cls: type[_T]) -> type[_T]:
    """Pickle a frozen slotted dataclass as a call of its constructor with its field values.

    The ``__getstate__`` that ``dataclass(slots=True)`` generates calls ``dataclasses.fields()`` on
    every pickle; events and the job's messages are pickled for every hop between stages.

    >>> import pickle
    >>> pickle.loads(pickle.dumps(Decision("r1", "ts", "a", 0.5)))
    Decision(request_id='r1', policy='ts', arm='a', propensity=0.5)
    """
    names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    values = operator.attrgetter(*names)

    def __reduce__(self: Any) -> tuple[Any, ...]:
        got = values(self)
        return cls, (got if len(names) > 1 else (got,))

    cls.__reduce__ = __reduce__  # type: ignore[method-assign]
    return cls


def quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen slotted dataclass an ``__init__`` that sets its slots directly: about half the cost.

    The ``__init__`` of ``dataclass(frozen=True)`` sets each field with ``object.__setattr__``
    (~0.1 us a field); the job builds several such objects per event (an event, its session state,
    the learners' parameters, messages), a frozen ``Event`` cost 1.3 us and costs 0.66 us this way.
    The same parameters, defaults and default factories; instances stay frozen (assignment still
    raises) and equal to what the dataclass's own ``__init__`` builds. Refused for a class with
    ``__post_init__``, fields outside ``__init__`` or keyword-only fields.

    >>> @quick_init
    ... @dataclass(frozen=True, slots=True)
    ... class Point:
    ...     x: int
    ...     tags: list[str] = field(default_factory=list)
    >>> Point(1), Point(x=2, tags=["a"]), Point(1).tags is not Point(1).tags
    (Point(x=1, tags=[]), Point(x=2, tags=['a']), True)
    >>> Point(1).x = 5
    Traceback (most recent call last):
    dataclasses.FrozenInstanceError: cannot assign to field 'x'
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    params = getattr(cls, "__dataclass_params__", None)
    if (params is None or not params.frozen or "__slots__" not in cls.__dict__ or hasattr(cls, "__post_init__")
            or any(not f.init or f.kw_only for f in fields)):
        raise TypeError(f"{cls.__name__}: quick_init is for frozen slotted dataclasses without __post_init__, "
                        "fields outside __init__ or keyword-only fields")
    env: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    args, lines = [], []
    for f in fields:
        slot = next(klass.__dict__[f.name] for klass in cls.__mro__ if f.name in klass.__dict__)
        env[f"_set_{f.name}"] = slot.__set__  # the slot's own setter: no frozen check, no name lookup
        value = f.name
        if f.default is not dataclasses.MISSING:
            env[f"_default_{f.name}"] = f.default
            args.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not dataclasses.MISSING:
            env[f"_factory_{f.name}"] = f.default_factory
            args.append(f"{f.name}=_MISSING")
            value = f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
        else:
            args.append(f.name)
        lines.append(f"    _set_{f.name}(self, {value})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(lines or ["    pass"])
    exec(source, env)  # built from source, as dataclasses builds its own __init__
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """What a policy decided for an impression: the arm shown and its propensity."""

    request_id: str
    policy: str
    arm: str
    propensity: float


@pickled_as_call
@quick_init
@dataclass(frozen=True, slots=True)
class Event:
    """One user interaction, as on the ``events`` topic (key = ``user_id``).

    ``context`` is a plain dict so events pickle (Flink ships them between workers);
    treat it as read-only. ``category`` (schema version 2) is the category a ``block`` event
    blocks; other types carry their item's category, if at all, in ``context["category"]``.
    """

    event_id: str
    type: EventType
    user_id: UserId
    event_time_ms: int
    item_id: ItemId | None = None
    value: float | None = None
    context: dict[str, str] = field(default_factory=dict)
    decision: Decision | None = None
    category: str | None = None

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes for ``event_v2.avsc`` (a version 1 writer ignores ``category``)."""
        return {
            "event_id": self.event_id,
            "type": self.type.value,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "value": self.value,
            "event_time_ms": self.event_time_ms,
            "context": dict(self.context),
            "decision": None
            if self.decision is None
            else {
                "request_id": self.decision.request_id,
                "policy": self.decision.policy,
                "arm": self.decision.arm,
                "propensity": self.decision.propensity,
            },
            "category": self.category,
        }

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Event:
        """Build from a record fastavro read (unknown extra fields of newer schemas ignored)."""
        return cls.from_fields(fields_of(record))

    def to_fields(self) -> EventFields:
        """The event as plain values, in field order (the decision as a 4-tuple): :data:`EventFields`."""
        d = self.decision
        return (self.event_id, self.type.value, self.user_id, self.event_time_ms, self.item_id, self.value,
                dict(self.context), None if d is None else (d.request_id, d.policy, d.arm, d.propensity),
                self.category)

    @classmethod
    def from_fields(cls, fields: EventFields) -> Event:
        """The event of :meth:`to_fields`' values (``fields`` of a checked record: no checks here)."""
        event_id, type_, user_id, event_time_ms, item_id, value, context, decision, category = fields
        return cls(event_id, EVENT_TYPE_OF[type_], user_id, event_time_ms, item_id, value, context,
                   None if decision is None else Decision(*decision), category)


#: An event as plain values (str, int, float, None, dict, tuple) in :class:`Event`'s field order,
#: the decision as ``(request_id, policy, arm, propensity)``. The job passes events between its
#: stages in this shape (``marshal``: cheaper than pickling the object, ADR 0007).
EventFields = tuple[str, str, str, int, "str | None", "float | None", dict[str, str],
                    "tuple[str, str, str, float] | None", "str | None"]

#: Each event type by its Avro symbol, and each one's symbol: the job looks both up for every event, and
#: in Python 3.11 ``EventType(symbol)`` costs ~0.5 us and ``.value`` (a property) ~0.17 us; a dict, ~0.02 us.
EVENT_TYPE_OF: dict[str, EventType] = {t.value: t for t in EventType}
SYMBOL_OF: dict[EventType, str] = {t: t.value for t in EventType}


def fields_of(record: Mapping[str, Any]) -> EventFields:
    """:data:`EventFields` of a record fastavro read (unknown extra fields ignored; version 1 has no category).

    >>> e = Event("e1", EventType.IMPRESSION, "u1", 1_700_000_000_000, item_id="i9",
    ...           decision=Decision("r1", "ts", "i9", 0.25))
    >>> fields_of(e.to_avro()) == e.to_fields() and Event.from_fields(e.to_fields()) == e
    True
    """
    decision = record.get("decision")
    return (record["event_id"], record["type"], record["user_id"], record["event_time_ms"], record.get("item_id"),
            record.get("value"), dict(record.get("context") or {}),
            None if decision is None else (decision["request_id"], decision["policy"], decision["arm"],
                                           decision["propensity"]),
            record.get("category"))


@dataclass(frozen=True, slots=True)
class Item:
    """A catalogue entry, as on the compacted ``items`` topic (key = ``item_id``)."""

    item_id: ItemId
    updated_ms: int
    category: str | None = None
    available: bool = True
    attributes: dict[str, str] = field(default_factory=dict)

    def to_avro(self) -> dict[str, Any]:
        """The dict fastavro writes for ``item.avsc``."""
        return {
            "item_id": self.item_id,
            "category": self.category,
            "available": self.available,
            "attributes": dict(self.attributes),
            "updated_ms": self.updated_ms,
        }

    @classmethod
    def from_avro(cls, record: Mapping[str, Any]) -> Item:
        """Build from a record fastavro read."""
        return cls(
            item_id=record["item_id"],
            category=record.get("category"),
            available=record.get("available", True),
            attributes=dict(record.get("attributes") or {}),
            updated_ms=record["updated_ms"],
        )
