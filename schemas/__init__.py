"""The event contract: Avro schemas, their ids, and the framed codec.

Public API: :class:`Event`, :class:`Decision`, :class:`EventType`, :class:`Item`,
:class:`EventCodec`, :class:`DecodeError`, :class:`DecodeReason`, :func:`load_registry`;
served lists (``served.avsc``): :class:`ServedList`, :class:`ServedItem`, :class:`ServedListCodec`.
"""

from schemas.codec import DeadLetterCodec, DecodeError, DecodeReason, EventCodec, ItemCodec, Limits
from schemas.events import ITEM_EVENT_TYPES, Decision, Event, EventType, Item, ItemId, UserId
from schemas.registry import LocalRegistry, SchemaRegistry, load_registry
from schemas.served import ServedItem, ServedList, ServedListCodec

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
    "ServedItem",
    "ServedList",
    "ServedListCodec",
    "UserId",
    "load_registry",
]
