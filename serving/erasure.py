"""The erasure log: one entry per ``DELETE /v1/users/{id}``, saying what was removed where and when.

An erasure reaches three places at three speeds (README "Erasure"):

* Redis: the user's keys and per-user bandit are deleted in the request (``redis_keys_deleted``);
* the job's state: cleared when the job reads the erase event ``event_id`` (within a second);
* Kafka: the user's events in the events, sessions and DLQ topics are deleted by retention,
  by ``kafka_deleted_by_ms`` at the latest (:meth:`config.Settings.erasure_bound_ms`).

The log is the Redis stream :meth:`schemas.redis_keys.RedisKeys.erasures`. It must not keep the
data it records the removal of, so it holds a digest of the user id, not the id: whoever holds
an id can check that it was erased (``user_digest(id)``), the log alone names nobody.

>>> from config import Settings
>>> record = ErasureRecord.of(Settings(), "u7", "e1", keys_deleted=3, at_ms=1_000)
>>> record.fields()["user_digest"] == user_digest("u7"), record.fields()["redis_keys_deleted"]
(True, '3')
>>> int(record.fields()["kafka_deleted_by_ms"]) - 1_000 == Settings().erasure_bound_ms()
True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from config import Settings

__all__ = ["MAX_ENTRIES", "ErasureRecord", "user_digest"]

#: Entries kept (trimmed approximately); about 250 bytes each.
MAX_ENTRIES = 1_000_000


def user_digest(user_id: str) -> str:
    """The log's stand-in for a user id: BLAKE2b-128 of its UTF-8 bytes, hex.

    >>> user_digest("u7")
    'f99da2bb01796458948120da7fa96807'
    """
    return hashlib.blake2b(user_id.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class ErasureRecord:
    """What one erasure removed where, and when the last copy in Kafka is gone."""

    at_ms: int
    user_digest: str
    event_id: str
    redis_keys_deleted: int
    kafka_deleted_by_ms: int

    @classmethod
    def of(cls, settings: Settings, user_id: str, event_id: str, *, keys_deleted: int, at_ms: int) -> ErasureRecord:
        """The record of erasing ``user_id`` at ``at_ms`` with erase event ``event_id``."""
        return cls(at_ms, user_digest(user_id), event_id, keys_deleted, at_ms + settings.erasure_bound_ms())

    def fields(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "at_ms": str(self.at_ms),
            "user_digest": self.user_digest,
            "event_id": self.event_id,
            "redis_keys_deleted": str(self.redis_keys_deleted),
            "job_state": "cleared when the job reads event_id",
            "kafka_deleted_by_ms": str(self.kafka_deleted_by_ms),
        }
