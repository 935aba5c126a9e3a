"""Every served recommendation list, logged to the served topic (``served.avsc``), off the request path.

The record is written from the response body (same items, positions, scores), framed with the
served subject's schema id (:meth:`~schemas.served.ServedListCodec.encode_answer`) and queued on
the :class:`~serving.outbox.LogOutbox`: one ``produce_batch`` every 50 ms, the response never
waits for Kafka. Outcomes are counted (``pulse_serving_served_lists_total``: queued, failed,
dropped, off); a record the producer refused is dropped and counted, the answer stands.
ADR: docs/adr/0009-experiments-and-served-lists.md.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Mapping
from typing import Any

from schemas import ServedListCodec, load_registry
from serving.outbox import LogOutbox

__all__ = ["ServedLog"]

log = logging.getLogger(__name__)

SURFACE = "recommendations"


class ServedLog:
    """Queues one ``served.avsc`` record per answered recommendations request."""

    def __init__(self, outbox: LogOutbox, topic: str, enabled: bool = True,
                 schema_registry_url: str | None = None) -> None:
        self.outbox = outbox
        self.topic = topic
        self.enabled = enabled
        self.codec = ServedListCodec(load_registry(schema_registry_url))

    async def check_topic(self) -> None:
        """Turn logging off (with a warning) when the broker says the served topic does not exist.

        Producing to a missing topic would fail every record after the delivery timeout and hold
        shutdown's flush; a broker that does not answer leaves logging on (it may come back).
        """
        if self.enabled and await self.outbox.topic_exists(self.topic) is False:
            log.warning("topic %r does not exist: served lists are not logged (create it with the other topics, "
                        "producers/topics.py ensure_topics)", self.topic)
            self.enabled = False

    def recommendations(self, body: Mapping[str, Any], prefix: str, policy: str, served_at_ms: int) -> None:
        """Queue the record of one recommendations answer (``body`` as the client gets it)."""
        if not self.enabled:
            self.outbox.on_outcome("off")
            return
        head = (body["request_id"], body["user_id"], served_at_ms, SURFACE, body["source"], policy, prefix,
                body["model_version"], body.get("experiment"), body.get("variant"), body["segment"])
        try:
            payload = self.codec.encode_answer(head, body["items"])
        except (ValueError, TypeError, OverflowError, struct.error) as exc:
            log.warning("served list %s not logged: %s", body["request_id"], exc)
            self.outbox.on_outcome("dropped")
            return
        self.outbox.put(self.topic, body["user_id"], payload)

    def close(self, timeout_s: float = 5.0) -> int:
        """Hand over what is queued and wait for it; how many records were still undelivered."""
        return self.outbox.close(timeout_s)
