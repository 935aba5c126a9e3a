"""Every served recommendation list, logged to the served topic (``served.avsc``), off the request path.

The record is built from the response body (same items, positions, scores), framed with the
served subject's schema id and queued on the collector with the impressions: one
``produce_batch`` every few milliseconds, the response never waits for Kafka. Delivery outcomes
are counted (``pulse_serving_served_lists_total``); a record the producer refused is dropped and
counted, the answer stands. ADR: docs/adr/0009-experiments-and-served-lists.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from schemas import ServedListCodec, load_registry
from serving.collector import Collector, CollectorUnavailableError

__all__ = ["ServedLog"]

log = logging.getLogger(__name__)

SURFACE = "recommendations"


class ServedLog:
    """Queues one ``served.avsc`` record per answered recommendations request."""

    def __init__(self, collector: Collector, topic: str, on_outcome: Callable[[str], None], enabled: bool = True,
                 schema_registry_url: str | None = None) -> None:
        self.collector = collector
        self.topic = topic
        self.on_outcome = on_outcome
        self.enabled = enabled
        self.codec = ServedListCodec(load_registry(schema_registry_url))

    async def check_topic(self) -> None:
        """Turn logging off (with a warning) when the broker says the served topic does not exist.

        Producing to a missing topic would fail every record after the delivery timeout and hold
        shutdown's flush; a broker that does not answer leaves logging on (it may come back).
        """
        if self.enabled and await self.collector.topic_exists(self.topic) is False:
            log.warning("topic %r does not exist: served lists are not logged (create it with the other topics, "
                        "producers/topics.py ensure_topics)", self.topic)
            self.enabled = False

    def recommendations(self, body: Mapping[str, Any], prefix: str, policy: str, served_at_ms: int) -> None:
        """Queue the record of one recommendations answer (``body`` as the client gets it)."""
        if not self.enabled:
            self.on_outcome("off")
            return
        record = {
            "request_id": body["request_id"], "user_id": body["user_id"], "served_at_ms": served_at_ms,
            "surface": SURFACE, "source": body["source"], "policy": policy, "prefix": prefix,
            "model_version": body["model_version"], "experiment": body.get("experiment"),
            "variant": body.get("variant"), "segment": body["segment"],
            "items": [{"item_id": item["item_id"], "position": position, "score": item["score"]}
                      for position, item in enumerate(body["items"])],
        }
        try:
            payload = self.codec.encode_record(record)
            self.collector.queue_nowait(self.topic, body["user_id"], payload, self.on_outcome,
                                        f"served list {body['request_id']}")
        except (CollectorUnavailableError, ValueError, TypeError, OverflowError) as exc:
            log.warning("served list %s not logged: %s", body["request_id"], exc)
            self.on_outcome("dropped")
