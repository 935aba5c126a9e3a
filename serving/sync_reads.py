"""Blocking reads of a user's and an item's values, in either format, for tools.

The demo's live view, benches and tests read what :class:`serving.store.RedisStore` reads, with a
``redis.Redis``.

Format 2 (one string, :mod:`schemas.redis_values`) first; the format-1 hashes when there is none.
"""

from __future__ import annotations

import redis

from schemas.redis_keys import Envelope, RedisKeys, UserKind
from schemas.redis_values import decode_item_value, decode_user_value

__all__ = ["item_envelope", "user_envelopes", "user_part"]


def user_envelopes(client: redis.Redis, keys: RedisKeys, user_id: str) -> dict[UserKind, Envelope | None]:
    """Every part of a user's value (``None`` for a part it does not have)."""
    data = client.get(keys.user_record(user_id))
    if data is not None:
        value = decode_user_value(data)  # type: ignore[arg-type]
        return {kind: value.envelope(kind) for kind in UserKind}
    pipe = client.pipeline(transaction=False)
    for kind in UserKind:
        pipe.hgetall(keys.user(user_id, kind))
    return {kind: Envelope.from_fields_or_none(fields) for kind, fields in zip(UserKind, pipe.execute(), strict=True)}


def user_part(client: redis.Redis, keys: RedisKeys, user_id: str, kind: UserKind | str) -> Envelope | None:
    """One part of a user's value (``counts``, ``session``, ``factors``, ``recs``), or ``None``."""
    return user_envelopes(client, keys, user_id)[UserKind(kind)]


def item_envelope(client: redis.Redis, keys: RedisKeys, item_id: str) -> Envelope | None:
    """An item's bias and factors, or ``None``."""
    data = client.get(keys.item_record(item_id))
    if data is not None:
        return decode_item_value(data)  # type: ignore[arg-type]
    return Envelope.from_fields_or_none(client.hgetall(keys.item_params(item_id)))  # type: ignore[arg-type]
