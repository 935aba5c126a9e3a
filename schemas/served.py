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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from schemas.codec import DecodeError, DecodeReason, Limits, _FramedCodec
from schemas.registry import SERVED_SUBJECT, SchemaRegistry

__all__ = ["ServedItem", "ServedList", "ServedListCodec"]


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
        """Frame a record already in ``served.avsc``'s shape (serving's hot path builds it directly)."""
        return self._frame(record)

    def decode(self, payload: bytes) -> ServedList:
        """Decode and check one payload, or raise :class:`DecodeError`."""
        record = self._unframe(payload)
        self._check_id("request_id", record["request_id"])
        self._check_id("user_id", record["user_id"])
        _check_items(record["items"])
        return ServedList.from_avro(record)


def _check_items(items: Sequence[dict[str, Any]]) -> None:
    """Positions are 0, 1, 2, ... in order and scores are finite."""
    for expected, item in enumerate(items):
        if item["position"] != expected:
            raise DecodeError(DecodeReason.BAD_VALUE, f"item {item['item_id']!r} at position {item['position']}, "
                                                      f"expected {expected}")
        if not math.isfinite(item["score"]):
            raise DecodeError(DecodeReason.BAD_VALUE, f"item {item['item_id']!r} has score {item['score']}")
