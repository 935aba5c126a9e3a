"""The event contract: Avro schemas, their ids, and the framed codec.

Public API: :class:`Event`, :class:`Decision`, :class:`EventType`, :class:`Item`,
:class:`EventCodec`, :class:`DecodeError`, :class:`DecodeReason`, :func:`load_registry`.
"""

from schemas.codec import DeadLetterCodec, DecodeError, DecodeReason, EventCodec, ItemCodec, Limits
from schemas.events import ITEM_EVENT_TYPES, Decision, Event, EventType, Item, ItemId, UserId
from schemas.registry import LocalRegistry, SchemaRegistry, load_registry

__all__ = [
    "ITEM_EVENT_TYPES",
    "DeadLetterCodec",
    "Decision",
    "DecodeError",
    "DecodeReason",
    "Event",
    "EventCodec",
    "EventType",
    "Item",
    "ItemCodec",
    "ItemId",
    "Limits",
    "LocalRegistry",
    "SchemaRegistry",
    "UserId",
    "load_registry",
]
