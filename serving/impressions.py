r"""An event's framed Avro bytes written directly: fastavro's bytes for the events schema (versions 1 and 2).

Every decision logs an impression; fastavro's generic writer took ~10 % of a decision's server CPU
(py-spy on bench/serving.py), for a record whose layout is fixed: Avro's binary encoding is zigzag
varints, length-prefixed UTF-8, union branch indexes, little-endian doubles and maps as one block
of pairs then 0. :class:`DirectEventWriter` writes exactly that for the codec's writer schema
(version 1's fields, and version 2's trailing ``category``; the type's index from the schema's
symbols), and checks at start that its bytes equal the codec's for a probe event of every type;
when they do not (another schema), it leaves every event to the codec.

>>> from schemas import EventCodec
>>> from schemas.events import Decision, Event, EventType
>>> codec = EventCodec()
>>> writer = DirectEventWriter(codec)
>>> writer.direct
True
>>> event = Event("e1", EventType.IMPRESSION, "u1", 1_700_000_000_000, "a", None, {"segment": "men"},
...               Decision("r1", "ts", "a", 0.25))
>>> writer.encode(event) == codec.encode(event)
True
>>> long_bytes(-1), long_bytes(63), long_bytes(64)
(b'\x01', b'~', b'\x80\x01')
"""

from __future__ import annotations

import struct
from typing import Any

from schemas import EventCodec
from schemas.codec import MAGIC_BYTE
from schemas.events import Decision, Event, EventType
from schemas.served import avro_long

__all__ = ["DirectEventWriter", "long_bytes"]

_SMALL = [bytes([n << 1]) for n in range(64)]
_NULL = b"\x00"
_SOME = b"\x02"  # the second branch of a ["null", T] union
_DOUBLE = struct.Struct("<d").pack
_V1_FIELDS = ("event_id", "type", "user_id", "item_id", "value", "event_time_ms", "context", "decision")
_V2_FIELDS = (*_V1_FIELDS, "category")


long_bytes = avro_long  # Avro int/long: zigzag, then base-128 varint


def _string(text: str) -> bytes:
    data = text.encode()
    return long_bytes(len(data)) + data


#: Encoded texts that repeat from event to event (context keys and values, policies, arms), bounded.
_REPEATED: dict[str, bytes] = {}


def _repeated(text: str) -> bytes:
    found = _REPEATED.get(text)
    if found is None:
        if len(_REPEATED) >= 4096:
            _REPEATED.clear()
        found = _REPEATED[text] = _string(text)
    return found


def _probes() -> list[Event]:
    """Events covering every field's branches (none, one and several context entries, non-ASCII text), every type."""
    every_type = [Event(f"t{n}", event_type, "u", 1_700_000_000_000 + n, "i") for n, event_type in enumerate(EventType)]
    return [*every_type,
        Event("e1", EventType.IMPRESSION, "u1", 1_700_000_000_000, "a", None, {"segment": "men", "ré": "ü"},
              Decision("0123456789abcdef0123456789abcdef", "ts", "a", 0.123456789)),
        Event("e2", EventType.CLICK, "u-2", 946_684_800_000, "i" * 70, 1.5, {}, None),
        Event("e3", EventType.VIEW, "u3", 1_700_000_000_001, None, -0.0, {"k": ""}, None),
        *[Event("e4", event_type, "u4", 1_700_000_000_002, None, category="shoes")
          for event_type in EventType if event_type.value == "block"],  # schema version 2
    ]


class DirectEventWriter:
    """:meth:`encode` gives ``codec.encode(event)``'s bytes, written directly while :attr:`direct`."""

    def __init__(self, codec: EventCodec) -> None:
        self.codec = codec
        self._header = bytes([MAGIC_BYTE]) + codec.schema_id.to_bytes(4, "big")
        fields = _fields(codec.registry.writer_schema(codec.schema_id))
        self._category = tuple(fields) == _V2_FIELDS
        self.direct = tuple(fields) == _V1_FIELDS or self._category
        try:
            symbols = fields["type"]["type"]["symbols"] if self.direct else []
            self._type_index = {symbol: _SMALL[index] for index, symbol in enumerate(symbols)}
            self.direct = self.direct and all(self._write(event) == codec.encode(event) for event in _probes()
                                              if event.type.value in self._type_index)
        except (KeyError, TypeError, ValueError, IndexError):  # not the layout written here
            self.direct = False

    def encode(self, event: Event) -> bytes:
        """The framed record (``TypeError``/``ValueError``/``OverflowError`` for values Avro cannot hold)."""
        if not self.direct:
            return self.codec.encode(event)
        try:
            return self._write(event)
        except AttributeError as exc:  # a text field that is not a str, as fastavro's TypeError
            raise TypeError(str(exc)) from None

    def _write(self, event: Event) -> bytes:
        if not isinstance(event.event_time_ms, int) or not -(2**63) <= event.event_time_ms < 2**63:
            raise OverflowError(f"event_time_ms {event.event_time_ms!r} is not an Avro long")
        type_index = self._type_index.get(event.type.value)
        if type_index is None or (event.category is not None and not self._category):
            return self.codec.encode(event)  # what this schema version cannot carry: the codec's error
        parts = [self._header, _string(event.event_id), type_index,
                 _string(event.user_id),
                 _NULL if event.item_id is None else _SOME + _repeated(event.item_id),
                 _NULL if event.value is None else _SOME + _DOUBLE(event.value),
                 long_bytes(event.event_time_ms)]
        context = event.context
        if context:
            parts.append(long_bytes(len(context)))
            for key, value in context.items():
                parts += (_repeated(key), _repeated(value))
        parts.append(_NULL)
        decision = event.decision
        if decision is None:
            parts.append(_NULL)
        else:
            parts += (_SOME, _string(decision.request_id), _repeated(decision.policy), _repeated(decision.arm),
                      _DOUBLE(decision.propensity))
        if self._category:  # schema version 2's field
            parts.append(_NULL if event.category is None else _SOME + _repeated(event.category))
        return b"".join(parts)


def _fields(schema: Any) -> dict[str, Any]:
    """A record schema's fields by name, in order (empty for anything else)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("fields"), list):
        return {}
    return {field["name"]: field for field in schema["fields"] if isinstance(field, dict) and "name" in field}
