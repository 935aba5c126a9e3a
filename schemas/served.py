r"""Served lists (``served.avsc``): what serving answered, for attribution and off-policy evaluation.

Framed like events (magic byte, schema id of the ``served-value`` subject, Avro body), so a
reader resolves older versions the same way and a Schema Registry can hold them.

>>> codec = ServedListCodec()
>>> served = ServedList("r1", "u1", 1_700_000_000_000, "recommendations", "model", "mf", "pulse", "mf-v1",
...                     "home", "B", None, (ServedItem("i1", 0, 4.5), ServedItem("i2", 1, 4.0)))
>>> payload = codec.encode(served)
>>> payload[:5], codec.decode(payload) == served
(b'\x00\x00\x00\x00\x04', True)
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from schemas.codec import DecodeError, DecodeReason, Limits, _FramedCodec
from schemas.registry import SERVED_SUBJECT, SchemaRegistry

__all__ = ["ServedItem", "ServedList", "ServedListCodec", "avro_long"]

#: The fields of ``served.avsc`` version 1, in order: what :meth:`ServedListCodec.encode_answer` writes.
V1_FIELDS = ("request_id", "user_id", "served_at_ms", "surface", "source", "policy", "prefix", "model_version",
             "experiment", "variant", "segment", "items")
_DOUBLE = struct.Struct("<d").pack
_SMALL = [bytes(((n << 1),)) for n in range(64)]  # zigzag varints of 0..63: one byte each
_NULL, _SOME = b"\x00", b"\x02"  # union branches 0 (null) and 1 (string)
#: Encoded item ids seen recently (a catalogue's ids recur in every list); cleared when full.
_ENCODED: dict[str, bytes] = {}
_MAX_ENCODED = 100_000


@dataclass(frozen=True, slots=True)
class ServedItem:
    """One item of a served list: its 0-based position and the score it was ranked by."""

    item_id: str
    position: int
    score: float


@dataclass(frozen=True, slots=True)
class ServedList:
    """One answer of serving, as ``served.avsc`` records it (same field order)."""

    request_id: str
    user_id: str
    served_at_ms: int
    surface: str
    source: str
    policy: str
    prefix: str
    model_version: str | None
    experiment: str | None
    variant: str | None
    segment: str | None
    items: tuple[ServedItem, ...]

    def to_avro(self) -> dict[str, Any]:
        """The Avro record (plain dicts)."""
        return {
            "request_id": self.request_id, "user_id": self.user_id, "served_at_ms": self.served_at_ms,
            "surface": self.surface, "source": self.source, "policy": self.policy, "prefix": self.prefix,
            "model_version": self.model_version, "experiment": self.experiment, "variant": self.variant,
            "segment": self.segment,
            "items": [{"item_id": i.item_id, "position": i.position, "score": i.score} for i in self.items],
        }

    @classmethod
    def from_avro(cls, record: dict[str, Any]) -> ServedList:
        """From a decoded record."""
        items = tuple(ServedItem(str(i["item_id"]), int(i["position"]), float(i["score"])) for i in record["items"])
        fields = {name: record[name] for name in cls.__slots__ if name != "items"}
        return cls(**fields, items=items)


class ServedListCodec(_FramedCodec):
    """Encode and decode :class:`ServedList` for the served topic (``PULSE_TOPIC_SERVED``)."""

    subject = SERVED_SUBJECT
    #: A list of up to MAX_K items with long ids is larger than an event.
    MAX_BYTES = 1024 * 1024

    def __init__(self, registry: SchemaRegistry | None = None, limits: Limits | None = None) -> None:
        super().__init__(registry, limits or Limits(max_bytes=self.MAX_BYTES))

    def encode(self, served: ServedList) -> bytes:
        """Frame ``served`` with the newest schema id of the served subject."""
        return self._frame(served.to_avro())

    def encode_record(self, record: dict[str, Any]) -> bytes:
        """Frame a record already in ``served.avsc``'s shape (with fastavro)."""
        return self._frame(record)

    @property
    def writes_v1(self) -> bool:
        """Whether the newest schema of the subject is version 1's field list (:meth:`encode_answer`'s)."""
        return tuple(field["name"] for field in self._reader["fields"]) == V1_FIELDS

    def encode_answer(self, head: Sequence[Any], items: Sequence[Mapping[str, Any]]) -> bytes:
        """The framed record of one answer, written directly (serving's hot path).

        ``head`` is the first eleven fields of :data:`V1_FIELDS` in order; ``items`` the response's
        items (``item_id``, ``score``), positioned in order. The bytes are exactly fastavro's for
        the same record (``tests/unit/schemas/test_served.py``) at a fifth of its cost per call
        (~30 us for ten items): Avro's binary encoding of a fixed record is zigzag varints,
        length-prefixed UTF-8, union indexes and little-endian doubles. Only while
        :attr:`writes_v1`; otherwise (a newer registered version) fastavro writes it.
        """
        if not self.writes_v1:
            record = dict(zip(V1_FIELDS, head, strict=False))
            record["items"] = [{"item_id": it["item_id"], "position": n, "score": it["score"]}
                               for n, it in enumerate(items)]
            return self._frame(record)
        request_id, user_id, served_at_ms, surface, source, policy, prefix, *optional = head
        parts = [self._header, _string(request_id), _string(user_id), avro_long(served_at_ms), _string(surface),
                 _string(source), _string(policy), _string(prefix)]
        parts += [_NULL if value is None else _SOME + _string(value) for value in optional]
        if items:
            parts.append(avro_long(len(items)))
            for position, item in enumerate(items):
                parts += (_item_id(item["item_id"]), avro_long(position), _DOUBLE(item["score"]))
        parts.append(_NULL)  # end of the array
        return b"".join(parts)

    def decode(self, payload: bytes) -> ServedList:
        """Decode and check one payload, or raise :class:`DecodeError`."""
        record = self._unframe(payload)
        self._check_id("request_id", record["request_id"])
        self._check_id("user_id", record["user_id"])
        _check_items(record["items"])
        return ServedList.from_avro(record)


def avro_long(n: int) -> bytes:
    """Avro ``int``/``long``: zigzag, then base-128 varint (serving's impression writer uses it too)."""
    if 0 <= n < 64:
        return _SMALL[n]
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _string(text: str) -> bytes:
    """Avro ``string``: length, then UTF-8."""
    raw = text.encode()
    return avro_long(len(raw)) + raw


def _item_id(text: str) -> bytes:
    """:func:`_string` of an item id, cached (a catalogue's ids recur in every list)."""
    encoded = _ENCODED.get(text)
    if encoded is None:
        if len(_ENCODED) >= _MAX_ENCODED:
            _ENCODED.clear()
        encoded = _ENCODED[text] = _string(text)
    return encoded


def _check_items(items: Sequence[dict[str, Any]]) -> None:
    """Positions are 0, 1, 2, ... in order and scores are finite."""
    for expected, item in enumerate(items):
        if item["position"] != expected:
            raise DecodeError(DecodeReason.BAD_VALUE, f"item {item['item_id']!r} at position {item['position']}, "
                                                      f"expected {expected}")
        if not math.isfinite(item["score"]):
            raise DecodeError(DecodeReason.BAD_VALUE, f"item {item['item_id']!r} has score {item['score']}")
