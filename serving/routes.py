"""The HTTP endpoints: ``/v1`` (API key when configured), ``/healthz``, ``/readyz``, ``/metrics``.

Handlers only translate between HTTP and :class:`Services`; errors are exceptions that
:mod:`serving.app` turns into :class:`~serving.models.Error` bodies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from config import Settings
from config.experiments import Experiment
from schemas.events import Event, EventType
from serving.catalogue import Catalogue
from serving.collector import Collector, CollectorUnavailableError
from serving.covisit import covisited_items
from serving.decisions import Decided, Decider
from serving.erasure import MAX_ENTRIES, ErasureRecord
from serving.events import collect_batch, parse_batch, to_event
from serving.experiment_results import build_report, running_experiments, stored_results
from serving.metrics import CONTENT_TYPE_LATEST, Metrics
from serving.models import (
    ID_PATTERN,
    MAX_FILTER_VALUES,
    MAX_ID_LENGTH,
    MAX_K,
    MAX_SESSION_BOOST,
    Accepted,
    BatchResult,
    Blocks,
    BlocksIn,
    DecisionRequest,
    DecisionResponse,
    Erased,
    Error,
    EventIn,
    ExperimentReport,
    Health,
    Id,
    Recommendations,
    Session,
    SimilarItems,
)
from serving.recommendations import Recommender, now_ms
from serving.security import KeyScope, require
from serving.served import ServedLog
from serving.similar import SimilarIndexView, similar_items
from serving.store import RedisStore, StoreError, TooManyBlocksError

__all__ = ["PREFIX_HEADER", "Services", "decision_answer", "decision_json", "ops", "recommendations_json", "v1"]

#: Response header of a recommendations answer: the Redis prefix (model) it was read from.
PREFIX_HEADER = "x-pulse-prefix"


@dataclass
class Services:
    """What the handlers use; built by the app's lifespan."""

    settings: Settings
    store: RedisStore
    recommender: Recommender
    decider: Decider
    collector: Collector
    metrics: Metrics
    #: Logs every served list (None: not logged, e.g. services built by hand in tests).
    served: ServedLog | None = None
    #: The recommendations experiment of PULSE_EXPERIMENTS (None: every user gets ``mf``).
    experiment: Experiment | None = None
    #: Every item's factors, for similar items (None: the endpoint answers 404).
    similar: SimilarIndexView | None = None


async def services(request: Request) -> Services:
    """FastAPI dependency: the app's services."""
    found: Services = request.app.state.services
    return found


def _json(model: BaseModel) -> Response:
    """The model as JSON, skipping FastAPI's second validation of a response we built typed (hot paths)."""
    return Response(model.__pydantic_serializer__.to_json(model), media_type="application/json")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Error} for code in codes}


Svc = Annotated[Services, Depends(services)]
#: The filters recommendations and similar items share.
ExcludeItems = Annotated[
    list[Id], Query(max_length=MAX_FILTER_VALUES, description="Item ids never to return (repeat the parameter)")]
OnlyCategories = Annotated[
    list[Id], Query(max_length=MAX_FILTER_VALUES, description="Only items of these catalogue categories (repeat the "
                    "parameter)")]
ExcludeCategories = Annotated[
    list[Id], Query(max_length=MAX_FILTER_VALUES, description="No items of these catalogue categories")]
UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)]

v1 = APIRouter(prefix="/v1", responses=_errors(400, 401, 403, 503))
ops = APIRouter()
#: Every /v1 route names the scope its key needs (serving/security.py).
READ = [Depends(require(KeyScope.READ))]
EVENTS = [Depends(require(KeyScope.EVENTS, key_in_query=True))]
ADMIN = [Depends(require(KeyScope.ADMIN))]


@v1.get("/users/{user_id}/recommendations", response_model=Recommendations, tags=["recommendations"],
        dependencies=READ)
async def recommendations(
    svc: Svc,
    user_id: UserId,
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items")] = 10,
    exclude_seen: Annotated[bool, Query(description="Drop items of the user's live session")] = True,
    explain: Annotated[bool, Query(description="Add the parts of each model score")] = False,
    segment: Annotated[
        str | None,
        Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN, description="Segment of a cold user"),
    ] = None,
    exclude: ExcludeItems = [],  # noqa: B006 -- FastAPI copies the default per request
    category: OnlyCategories = [],  # noqa: B006
    exclude_category: ExcludeCategories = [],  # noqa: B006
    session_boost: Annotated[
        float | None,
        Query(ge=0.0, le=MAX_SESSION_BOOST, allow_inf_nan=False,
              description="Added to the score of an item whose category the open session visited, times that "
              "category's share of the session; 0 = off (default: PULSE_SERVING_SESSION_BOOST). Model lists only"),
    ] = None,
    max_per_category: Annotated[
        int | None,
        Query(ge=1, le=MAX_K, description="At most this many items of one catalogue category (items without "
              "a category are not capped); the list still holds k items while enough are eligible"),
    ] = None,
) -> Response:
    """The user's live top-k; the decayed popularity of ``segment`` (else ``*``) for cold users.

    Items the catalogue marks unavailable, and items the user blocked, are never returned;
    ``exclude``, ``category`` and ``exclude_category`` narrow the list further, which still holds
    ``k`` items while the user's stored scores (``PULSE_TOP_K``) have that many eligible ones.
    ``session_boost`` re-ranks by the open session's categories, ``max_per_category`` diversifies.
    """
    body, prefix = await recommendations_json(svc, user_id, k, exclude_seen, explain, segment,
                                              exclude=exclude, categories=category,
                                              exclude_categories=exclude_category, session_boost=session_boost,
                                              max_per_category=max_per_category)
    return Response(body, media_type="application/json", headers={PREFIX_HEADER: prefix})


async def recommendations_json(
    svc: Services, user_id: str, k: int, exclude_seen: bool, explain: bool, segment: str | None,
    session_boost: float | None = None, max_per_category: int | None = None, **filters: Sequence[str],
) -> tuple[bytes, str]:
    """The recommendations response body and the prefix it was read from (the route's; the fast paths call it too).

    The user's variant of the recommendations experiment picks the policy; the answer is queued
    for the served topic (:class:`~serving.served.ServedLog`) before it is returned.
    """
    # The live prefix as the user's values are read (their keys are built before the read's first await):
    # read after the answer, a promote or rollback during the read named the other prefix.
    prefix = svc.store.keys.prefix
    experiment = svc.experiment
    variant = experiment.assign(user_id) if experiment is not None else None
    policy = variant.policy if variant is not None else "mf"
    body = await svc.recommender.recommend(
        user_id, k, exclude_seen=exclude_seen, explain=explain, segment=segment, policy=policy,
        experiment=experiment.name if variant is not None and experiment is not None else None,
        variant=variant.name if variant is not None else None, session_boost=session_boost,
        max_per_category=max_per_category, **filters)
    svc.metrics.recommendation(body["source"], body["degraded"])
    if svc.served is not None:
        svc.served.recommendations(body, prefix, policy, now_ms())
    return orjson.dumps(body), prefix


@v1.get("/users/{user_id}/session", response_model=Session, responses=_errors(404), tags=["users"],
        dependencies=READ)
async def session(svc: Svc, user_id: UserId) -> Session | JSONResponse:
    """The user's live session as the job last wrote it; 404 when the job has none."""
    envelope = await svc.store.session(user_id)
    if envelope is None:
        return JSONResponse({"error": "not_found", "detail": "no session for this user"}, status_code=404)
    payload: dict[str, Any] = envelope.payload
    fields = {name: payload[name] for name in Session.model_fields if name in payload}
    return Session(**{**fields, "open": bool(payload.get("open")), "user_id": user_id,
                      "model_version": envelope.model_version, "event_time_ms": envelope.event_time_ms,
                      "freshness_ms": now_ms() - envelope.event_time_ms})


@v1.get("/users/{user_id}/blocks", response_model=Blocks, tags=["users"], dependencies=READ)
async def blocks(svc: Svc, user_id: UserId) -> Blocks:
    """The items and the catalogue categories the user blocked."""
    items, categories = await svc.store.blocked(user_id)
    return Blocks(user_id=user_id, item_ids=sorted(items), categories=sorted(categories), changed=0)


@v1.post("/users/{user_id}/blocks", response_model=Blocks, responses=_errors(422), tags=["users"],
         dependencies=EVENTS)
async def block(svc: Svc, user_id: UserId, body: BlocksIn) -> Blocks | JSONResponse:
    """Block items and/or catalogue categories for the user ("not interested").

    From the next request on, neither the items nor any item of the categories is in the user's
    recommendations (model or popularity) or in similar items asked with the user's ``user_id``.
    A user may block at most ``PULSE_SERVING_MAX_BLOCKS`` items and categories together: a request
    that would go past it answers 422 and changes nothing. A publishable key may call it (like
    posting an event); erasing the user deletes the blocks.
    """
    try:
        changed, items, categories = await svc.store.block(user_id, body.item_ids, body.categories,
                                                           max_blocks=svc.settings.serving_max_blocks)
    except TooManyBlocksError as exc:
        svc.metrics.errors.labels(exc.reason).inc()
        return JSONResponse({"error": exc.reason, "detail": str(exc)}, status_code=422)
    return Blocks(user_id=user_id, item_ids=sorted(items), categories=sorted(categories), changed=changed)


@v1.delete("/users/{user_id}/blocks", response_model=Blocks, tags=["users"], dependencies=EVENTS)
async def unblock(svc: Svc, user_id: UserId, body: BlocksIn) -> Blocks:
    """Unblock items and/or categories (the body names them, as for ``POST``)."""
    changed, items, categories = await svc.store.block(user_id, body.item_ids, body.categories, unblock=True)
    return Blocks(user_id=user_id, item_ids=sorted(items), categories=sorted(categories), changed=changed)


@v1.get("/items/{item_id}/similar", response_model=SimilarItems, responses=_errors(404), tags=["items"],
        dependencies=READ)
async def similar(
    svc: Svc,
    item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN)],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="How many items")] = 10,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=MAX_ID_LENGTH, pattern=ID_PATTERN,
                          description="Whose blocks apply (items and categories the user blocked are left out)"),
    ] = None,
    exclude: ExcludeItems = [],  # noqa: B006 -- FastAPI copies the default per request
    category: OnlyCategories = [],  # noqa: B006
    exclude_category: ExcludeCategories = [],  # noqa: B006
    method: Annotated[Literal["factors", "covisit"], Query(description="factors: the model's item factors; covisit: "
                      "the co-visitation lists `pulse covisit --write` stored")] = "factors",
) -> SimilarItems | JSONResponse:
    """The items whose factors are most like the item's (cosine similarity), most similar first.

    From every item's factors as this worker last read them (every ``PULSE_SERVING_SIMILAR_REFRESH_S``);
    404 until the model has learned factors for the item. The item itself, unavailable items and
    the filters' items (as for recommendations) are left out; the list still holds ``k`` items while
    that many are eligible. ``method=covisit``: the items most co-visited with it instead (404 without a list).
    """
    view, catalogue = svc.similar, svc.recommender.catalogue
    current = catalogue.current if catalogue is not None else Catalogue()
    if method == "covisit":
        found = await covisited_items(svc.store, current, item_id, k, user_id=user_id, exclude=exclude,
                                      categories=category, exclude_categories=exclude_category)
        return found or _not_found(f"no co-visitation list for item {item_id!r} (pulse covisit --write)")
    found = None if view is None else await similar_items(
        view, current, item_id, k, user_id=user_id, exclude=exclude, categories=category,
        exclude_categories=exclude_category)
    if found is None:
        return JSONResponse({"error": "not_found", "detail": f"no factors for item {item_id!r} yet: the model "
                             "has not learned it (or this worker has not read it since)"}, status_code=404)
    return found


@v1.get("/experiments/{name}", response_model=ExperimentReport, responses=_errors(404), tags=["experiments"],
        dependencies=READ)
async def experiment_report(
    svc: Svc,
    name: Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@+=-]+$")],
    outcome: Annotated[Literal["clicked", "carted", "purchased"],
                       Query(description="What counts as a success of an exposure")] = "clicked",
    control: Annotated[Id | None, Query(description="The variant the others are compared with "
                                                    "(default: the experiment's first)")] = None,
) -> ExperimentReport | JSONResponse:
    """Per variant: exposures, CTR and conversion with 95% intervals, the lift against control and its p-value.

    From the counts the job's attribution keeps (``<prefix>:experiment:<name>``, under the live
    prefix); 404 for an experiment that is not configured, a control that is not one of its
    variants, or results the job has not written yet.
    """
    experiment = {e.name: e for e in running_experiments(svc.settings)}.get(name)
    if experiment is None:
        return _not_found(f"no experiment {name!r} is configured (PULSE_EXPERIMENTS)")
    control = control or experiment.variants[0].name
    if control not in {variant.name for variant in experiment.variants}:
        return _not_found(f"{control!r} is not a variant of {name!r}")
    keys = svc.store.keys
    (envelope,) = await svc.store.read([keys.experiment(name)])
    stored = stored_results(keys.prefix, keys.experiment(name), envelope)
    if stored.counts is None:
        return _not_found(f"no results for {name!r} yet: the job writes them once served lists or decisions "
                          "and the events they led to arrive (PULSE_JOB_ATTRIBUTION)")
    return ExperimentReport(**build_report(experiment, stored, outcome, control))


def _not_found(detail: str) -> JSONResponse:
    return JSONResponse({"error": "not_found", "detail": detail}, status_code=404)


@v1.post("/decisions", response_model=DecisionResponse, responses=_errors(404, 501), tags=["decisions"],
         dependencies=READ)
async def decide(svc: Svc, body: DecisionRequest) -> Response:
    """Choose an arm; the impression (with the propensity and the assignment) goes to Kafka in the background."""
    return Response(await decision_json(svc, body), media_type="application/json")


async def decision_json(svc: Services, body: DecisionRequest) -> bytes:
    """The decision response body (the route's; :mod:`serving.fastpath` calls it too); the impression is queued."""
    return decision_answer(svc, await svc.decider.decide(body, now_ms()))


def decision_answer(svc: Services, decided: Decided) -> bytes:
    """The body of a decision made: its impression queued (built at the flush), the metrics counted."""
    metrics = svc.metrics
    # Only queued: a full producer queue or an impression failing the checks is counted when it is flushed.
    svc.collector.send_nowait(decided.impression, metrics.impression)
    metrics.decision(decided.variant or "none", decided.policy)
    return decided.json()


@v1.post("/events", status_code=202, response_model=Accepted, tags=["events"], dependencies=EVENTS)
async def collect(svc: Svc, body: EventIn) -> Accepted:
    """Validate against ``event.avsc`` (and the job's checks); 202 once the broker acknowledged."""
    event = to_event(body, now_ms())
    delivered = await svc.collector.send(event)
    svc.metrics.events.labels("accepted").inc()
    return Accepted(event_id=event.event_id, topic=delivered.topic, partition=delivered.partition,
                    offset=delivered.offset)


@v1.post("/events:batch", response_model=BatchResult, responses=_errors(413), tags=["events"], dependencies=EVENTS,
         openapi_extra={"requestBody": {"required": True, "content": {
             "application/json": {"schema": {"$ref": "#/components/schemas/EventBatchIn"}},
             "text/plain": {"schema": {"$ref": "#/components/schemas/EventBatchIn"}}}}})
async def collect_events(svc: Svc, request: Request) -> Response:
    """Up to ``serving_batch_max_events`` events; one result each, once the broker acknowledged the valid ones.

    Rejected events (invalid, with their reason) must not be resent; failed ones (no acknowledgement)
    should be. The body may come as text/plain (what ``navigator.sendBeacon`` sends without a CORS
    preflight).
    """
    raw_events = parse_batch(await request.body(), svc.settings.serving_batch_max_events)
    result = await collect_batch(svc.collector, raw_events, now_ms())
    counter = svc.metrics.events
    counter.labels("accepted").inc(result.accepted)
    counter.labels("rejected").inc(result.rejected)
    counter.labels("failed").inc(result.failed)
    return _json(result)


@v1.delete("/users/{user_id}", status_code=202, response_model=Erased, tags=["users"], dependencies=ADMIN)
async def erase(svc: Svc, user_id: UserId) -> Erased:
    """Emit an erase event (acknowledged), delete the user's keys and per-user bandit, log the erasure.

    The job clears the user's state when it reads the event; Kafka drops the user's events by
    retention (serving/erasure.py, README "Erasure").
    """
    event = Event(event_id=uuid.uuid4().hex, type=EventType.ERASE, user_id=user_id, event_time_ms=now_ms())
    await svc.collector.send(event)
    store = svc.store
    keys = [*store.keys.user_keys(user_id), store.keys.bandit(svc.settings.bandit_policy, f"user:{user_id}")]
    deleted = await store.delete(keys)
    record = ErasureRecord.of(svc.settings, user_id, event.event_id, keys_deleted=deleted, at_ms=now_ms())
    await store.append_log(store.keys.erasures(), record.fields(), MAX_ENTRIES)
    return Erased(user_id=user_id, event_id=event.event_id, keys_deleted=deleted)


@ops.get("/healthz", response_model=Health, tags=["ops"])
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")


@ops.get("/readyz", response_model=Health, responses={503: {"model": Health}}, tags=["ops"])
async def readyz(svc: Svc) -> Health | JSONResponse:
    """Readiness: Redis answers PING and Kafka answers metadata with the events topic."""
    results = await asyncio.gather(svc.store.ping(), svc.collector.ping(), return_exceptions=True)
    checks = {name: "ok" if result is None else f"{getattr(result, 'reason', 'error')}: {result}"
              for name, result in zip(("redis", "kafka"), results, strict=True)}
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, StoreError | CollectorUnavailableError):
            raise result
    if all(value == "ok" for value in checks.values()):
        return Health(status="ready", checks=checks)
    return JSONResponse(Health(status="unavailable", checks=checks).model_dump(), status_code=503)


@ops.get("/metrics", include_in_schema=False)
async def metrics(svc: Svc) -> Response:
    """Prometheus text format."""
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)

