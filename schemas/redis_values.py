"""The compact Redis values (format 2): one string per user and one per item, a few hundred bytes each.

Pure (no I/O). ADR: docs/adr/0003-redis-key-scheme.md ("Format 2").

Format 1 kept four hashes per user (``recs``, ``session``, ``counts``, ``factors``) and one per item,
each an :class:`~schemas.redis_keys.Envelope` with an orjson payload: ~3 KB per user, mostly JSON
floats with 17 digits, item ids repeated in every list, and Redis's per-key overhead four times.
Format 2 keeps **one Redis string per user** (``<prefix>:user:{<user_id>}``) holding all four
parts, and one per item (``<prefix>:item:{<item_id>}``):

* a header: the format byte ``0x02``, the event time as 8 bytes big-endian (so the job's
  event-time guard reads it with ``GETRANGE 0 8``), the write time (as the lag behind the event
  time) and the model version;
* floats as float32 (scores, factors, biases, the global mean); a top-k's scores, best first, as the
  first score and then each step down in float32 units (~3 bytes each, still exact);
* event-type names in counts as one-byte codes; category names like item ids;
* a list of item ids sharing one prefix and a plain decimal number (``i3154``, ``1682``) as that
  prefix once and then 2 or 4 bytes per item; any other ids as length-prefixed UTF-8;
* counts and lengths as varints.

Readers get the same payload dicts as format 1 (the serving code does not know which format a
value came in); scores and factors come back at float32 precision.

>>> body = encode_user_value(
...     {"counts": {"view": 3, "click": 1}, "events": 4, "learned": 2},
...     {"open": False},
...     {"bias": 0.25, "factors": [0.5, -1.0]},
...     {"items": [["i7", 4.5], ["i12", 3.25]], "global_mean": 3.5},
... )
>>> value = decode_user_value(with_header(body, 1_700_000_000_000, 1_700_000_000_250, "mf-v1"))
>>> value.event_time_ms, value.model_version
(1700000000000, 'mf-v1')
>>> value.payload(UserKind.RECS)
{'items': [['i7', 4.5], ['i12', 3.25]], 'global_mean': 3.5}
>>> value.payload(UserKind.COUNTS)
{'counts': {'view': 3, 'click': 1}, 'events': 4, 'learned': 2}
>>> len(with_header(body, 1_700_000_000_000, 1_700_000_000_250, "mf-v1"))
58
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.compact_bytes import F32, Reader, floats, ids, named_counts, scores, text, type_counts, varint
from schemas.events import pickled_as_call, quick_init
from schemas.redis_keys import Envelope, UserKind

__all__ = [
    "FORMAT_COMPACT",
    "CatalogueValue",
    "CompactValue",
    "UserValue",
    "decode_header",
    "decode_item_value",
    "decode_user_value",
    "encode_item_value",
    "encode_user_value",
    "event_time_of",
    "is_compact",
    "with_header",
]

#: The first byte of every format-2 value (a format-1 hash's ``v`` is JSON and never starts with it).
FORMAT_COMPACT = 2

_EVENT_TIME = struct.Struct(">Q")
_HAS_SESSION, _HAS_FACTORS, _HAS_RECS, _HAS_HISTORY = 1, 2, 4, 8


@pickled_as_call  # pickled between stages: a constructor call, not dataclasses.fields() per pickle
@quick_init
@dataclass(frozen=True, slots=True)
class CompactValue:
    """A format-2 body ready to write; the Redis writer adds the header (times, model version).

    ``expire_ms`` > 0 sets a TTL on the key (inactive users' scores may expire; serving falls
    back to popularity).
    """

    body: bytes
    expire_ms: int = 0


@pickled_as_call
@dataclass(frozen=True, slots=True)
class CatalogueValue:
    """An item's catalogue entry ready to write.

    The writer stores it (an envelope hash under ``RedisKeys.catalogue_item``) and updates the
    catalogue's indexes in the same script.

    >>> CatalogueValue("i1", "shoes", False).payload()
    {'category': 'shoes', 'available': False, 'attributes': {}}
    """

    item_id: str
    category: str | None
    available: bool
    attributes: dict[str, str] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """What readers get back as the envelope's value."""
        return {"category": self.category, "available": self.available, "attributes": dict(self.attributes)}


# -- header -------------------------------------------------------------------------------------


def with_header(body: bytes, event_time_ms: int, write_time_ms: int, model_version: str) -> bytes:
    """The whole stored value: format byte, event time (8 bytes big-endian), write time, model version, body."""
    out = bytearray((FORMAT_COMPACT,))
    out += _EVENT_TIME.pack(event_time_ms)
    lag = write_time_ms - event_time_ms  # small, and never far below zero: zigzag
    varint(lag * 2 if lag >= 0 else -lag * 2 - 1, out)
    text(model_version, out)
    out += body
    return bytes(out)


def is_compact(data: bytes | str | None) -> bool:
    """Whether ``data`` (a Redis string) is a format-2 value."""
    return isinstance(data, bytes | bytearray) and len(data) >= 9 and data[0] == FORMAT_COMPACT


def event_time_of(data: bytes) -> int:
    """The event time of a format-2 value from its first 9 bytes (what ``GETRANGE key 0 8`` returns)."""
    if not is_compact(data):
        raise ValueError("not a Pulse format-2 value")
    return int(_EVENT_TIME.unpack_from(data, 1)[0])


def decode_header(data: bytes) -> tuple[int, int, str, Reader]:
    """``(event_time_ms, write_time_ms, model_version, reader at the body)``; ``ValueError`` if not format 2."""
    if not is_compact(data):
        raise ValueError("not a Pulse format-2 value")
    reader = Reader(data, 9)
    event_time_ms = _EVENT_TIME.unpack_from(data, 1)[0]
    lag = reader.varint()
    write_time_ms = event_time_ms + (lag >> 1 if not lag & 1 else -((lag + 1) >> 1))
    return event_time_ms, write_time_ms, reader.text(), reader


# -- users ------------------------------------------------------------------------------------


def encode_user_value(
    counts: Mapping[str, Any],
    session: Mapping[str, Any],
    factors: Mapping[str, Any] | None,
    recs: Mapping[str, Any] | None,
) -> bytes:
    """The body of a user's value from the four format-1 payloads (``counts``, ``session``, ``factors``, ``recs``).

    ``counts["events"]`` is not stored: it is the sum of ``counts["counts"]`` (what the job writes).
    """
    out = bytearray((
        (_HAS_SESSION if session.get("open") else 0)
        | (_HAS_FACTORS if factors is not None else 0)
        | (_HAS_RECS if recs is not None else 0)
        | (_HAS_HISTORY if session.get("history") else 0),
    ))
    type_counts(counts.get("counts") or {}, out)
    varint(int(counts.get("learned", 0)), out)
    if session.get("open"):
        text(session["session_id"], out)
        start = int(session["start_ms"])
        varint(start, out)
        varint(int(session["end_ms"]) - start, out)
        varint(int(session["n_events"]), out)
        varint(int(session["n_late"]), out)
        type_counts(session.get("counts") or {}, out)
        ids(session.get("recent_items") or [], out)
        named_counts(session.get("categories") or {}, out)
    if session.get("history"):  # items of closed sessions (flag 8: serving from this version reads it)
        ids(session["history"], out)
    if factors is not None:
        out += F32.pack(float(factors["bias"]))
        floats(factors["factors"], out)
    if recs is not None:
        out += F32.pack(float(recs.get("global_mean") or 0.0))
        ranked = recs["items"]
        ids([item for item, _ in ranked], out)
        if ranked:
            scores([score for _, score in ranked], out)
    return bytes(out)


@dataclass(frozen=True, slots=True)
class UserValue:
    """A decoded user value: its times, model version and the format-1 payload of each part present."""

    event_time_ms: int
    write_time_ms: int
    model_version: str
    parts: dict[UserKind, Any] = field(default_factory=dict)

    def payload(self, kind: UserKind | str) -> Any:
        """The part's payload (as format 1 held it), or ``None``."""
        return self.parts.get(UserKind(kind))

    def envelope(self, kind: UserKind | str) -> Envelope | None:
        """The part as a format-1 :class:`Envelope`, or ``None`` when the value has no such part."""
        payload = self.parts.get(UserKind(kind))
        if payload is None:
            return None
        return Envelope(payload, self.event_time_ms, self.write_time_ms, self.model_version)


def decode_user_value(data: bytes, top: int | None = None) -> UserValue:
    """The inverse of :func:`with_header` over :func:`encode_user_value`; ``ValueError`` if it is not one.

    ``top``: decode only as many recommendations as a top-``top`` without the session's recent
    items needs (serving asks for a few of the 50; the rest is not worth decoding).
    """
    try:
        event_time_ms, write_time_ms, model_version, r = decode_header(data)
        flags = r.byte()
        counts = r.type_counts()
        parts: dict[UserKind, Any] = {
            UserKind.COUNTS: {"counts": counts, "events": sum(counts.values()), "learned": r.varint()},
        }
        if flags & _HAS_SESSION:
            session_id, start = r.text(), r.varint()
            parts[UserKind.SESSION] = {
                "open": True, "session_id": session_id, "start_ms": start, "end_ms": start + r.varint(),
                "n_events": r.varint(), "n_late": r.varint(), "counts": r.type_counts(),
                "recent_items": r.ids(), "categories": r.named_counts(),
            }
        else:
            parts[UserKind.SESSION] = {"open": False}
        if flags & _HAS_HISTORY:
            parts[UserKind.SESSION]["history"] = r.ids()
        if flags & _HAS_FACTORS:
            parts[UserKind.FACTORS] = {"bias": r.f32(), "factors": r.floats()}
        if flags & _HAS_RECS:
            mean = r.f32()
            recent = parts[UserKind.SESSION].get("recent_items", ())
            limit = None if top is None else top + len(recent)
            at = r.at
            n = r.varint()
            r.at = at  # ids() reads the count again
            items = r.ids(limit)
            scores = r.scores(n, limit) if n else []
            parts[UserKind.RECS] = {"items": [[i, s] for i, s in zip(items, scores, strict=True)], "global_mean": mean}
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Pulse format-2 user value: {exc}") from exc
    return UserValue(event_time_ms, write_time_ms, model_version, parts)


# -- items -------------------------------------------------------------------------------------


def encode_item_value(params: Mapping[str, Any]) -> bytes:
    """The body of an item's value from its format-1 payload (``bias``, ``factors``, ``version``).

    >>> value = with_header(encode_item_value({"bias": 0.5, "factors": [1.0, 2.0], "version": 7}), 5, 6, "mf")
    >>> decode_item_value(value).payload
    {'bias': 0.5, 'factors': [1.0, 2.0], 'version': 7}
    """
    out = bytearray()
    varint(int(params.get("version", 0)), out)
    out += F32.pack(float(params["bias"]))
    floats(params["factors"], out)
    return bytes(out)


def decode_item_value(data: bytes) -> Envelope:
    """An item's format-2 value as the format-1 :class:`Envelope`; ``ValueError`` if it is not one."""
    try:
        event_time_ms, write_time_ms, model_version, r = decode_header(data)
        version = r.varint()
        payload = {"bias": r.f32(), "factors": r.floats(), "version": version}
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"not a Pulse format-2 item value: {exc}") from exc
    return Envelope(payload, event_time_ms, write_time_ms, model_version)
