"""Event intake: one event (``POST /v1/events``) or a batch (``POST /v1/events:batch``).

A batch is checked event by event: an invalid one is *rejected* with its reason and never sent;
the valid ones are produced together and answered only once the broker acknowledged each of them
(or the delivery timeout passed: those are *failed*, to be resent). An answer thus never claims an
event the broker could still lose, and a broker restart only delays the answer (within the
timeout, the idempotent producer retries without duplicates).

>>> parse_batch(b'{"events": [{"type": "view"}]}', 10)
[{'type': 'view'}]
>>> parse_batch(b'{"events": [1, 2, 3]}', 2)
Traceback (most recent call last):
serving.events.InvalidBatchError: 3 events; a batch carries at most 2
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from schemas import DecodeError, Event
from serving.collector import Collector, Delivered
from serving.models import BatchResult, EventIn, EventResult

__all__ = ["InvalidBatchError", "collect_batch", "parse_batch", "to_event"]


class InvalidBatchError(ValueError):
    """The body is not a batch at all (400; per-event problems are results, not this)."""

    reason = "invalid_request"


def to_event(body: EventIn, now_ms: int) -> Event:
    """The event to produce; ``request_id`` goes into the context (where attribution reads it)."""
    context = dict(body.context)
    if body.request_id is not None:
        context["request_id"] = body.request_id
    fields = body.model_dump(exclude={"request_id"})
    return Event.from_avro({**fields, "type": body.type.value, "context": context,
                            "event_time_ms": now_ms if body.event_time_ms is None else body.event_time_ms})


def parse_batch(raw: bytes, max_events: int) -> list[Any]:
    """The raw events of ``{"events": [...]}``; :class:`InvalidBatchError` when the body is not that."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidBatchError("the body is not JSON") from None
    if not isinstance(data, dict) or set(data) != {"events"} or not isinstance(data["events"], list):
        raise InvalidBatchError('the body must be {"events": [...]}')
    events: list[Any] = data["events"]
    if not events:
        raise InvalidBatchError("the batch has no events")
    if len(events) > max_events:
        raise InvalidBatchError(f"{len(events)} events; a batch carries at most {max_events}")
    return events


def _summary(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:3])


async def collect_batch(collector: Collector, raw_events: list[Any], now_ms: int) -> BatchResult:
    """Check each event, produce the valid ones, wait for their acknowledgements; one result per event."""
    results: list[EventResult | None] = [None] * len(raw_events)
    to_send: list[tuple[int, Event, bytes]] = []
    for index, raw in enumerate(raw_events):
        try:
            event = to_event(EventIn.model_validate(raw), now_ms)
            to_send.append((index, event, collector.encode(event)))
        except ValidationError as exc:
            results[index] = EventResult(index=index, status="rejected", error="invalid_request", detail=_summary(exc))
        except DecodeError as exc:
            results[index] = EventResult(index=index, status="rejected", error=exc.reason.value, detail=exc.detail)
    outcomes = await collector.send_many([(event.user_id, payload) for _, event, payload in to_send])
    for (index, event, _), outcome in zip(to_send, outcomes, strict=True):
        if isinstance(outcome, Delivered):
            results[index] = EventResult(index=index, status="accepted", event_id=event.event_id,
                                         partition=outcome.partition, offset=outcome.offset)
        else:
            results[index] = EventResult(index=index, status="failed", event_id=event.event_id,
                                         error=outcome.reason, detail=str(outcome))
    done = [r for r in results if r is not None]
    counts = {status: sum(1 for r in done if r.status == status) for status in ("accepted", "rejected", "failed")}
    return BatchResult(**counts, results=done)
