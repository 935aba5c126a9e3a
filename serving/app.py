"""The app factory: ``create_app(settings) -> FastAPI``. ADR: docs/adr/0004-serving.md.

The lifespan builds the Redis pool, the Kafka producer and the decision/recommendation services,
and closes them at shutdown. Every error is an :class:`~serving.models.Error` body with a reason
(request validation is 400, not FastAPI's 422); no response carries a stack trace.

>>> app = create_app(Settings())
>>> sorted(p for p in app.openapi()["paths"] if p.startswith("/v1"))[:2]
['/v1/decisions', '/v1/events']
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from config import Settings
from config.experiments import Experiment
from schemas import DecodeError
from schemas.redis_keys import RedisKeys
from serving.alias import LiveAlias
from serving.catalogue import CatalogueView
from serving.collector import Collector, CollectorUnavailableError
from serving.console import STATIC_DIR, console
from serving.decision_fastpath import DecisionsFastPath, ServingApp
from serving.decisions import Decider, DecisionError, DecisionPolicy
from serving.events import InvalidBatchError
from serving.fastpath import RecommendationsFastPath
from serving.metrics import Metrics, MetricsMiddleware
from serving.models import EventBatchIn
from serving.new_items import NewItemsView
from serving.outbox import LogOutbox
from serving.polling import poll_forever
from serving.recommendations import PopularityCache, Recommender
from serving.routes import Services, ops, v1
from serving.security import ApiKeys, BodyLimitMiddleware, Forbidden, Unauthorized, cors_origins
from serving.served import ServedLog
from serving.similar import SimilarIndexView
from serving.store import StoreCorruptError, StoreError, StoreUnavailableError

__all__ = ["build_services", "create_app"]

log = logging.getLogger(__name__)

_HTTP_REASONS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 413: "body_too_large"}
BATCH_PATH = "/v1/events:batch"


def build_services(settings: Settings, metrics: Metrics) -> Services:
    """Redis store, Kafka collector, recommender and decider (no network I/O yet)."""
    from serving.store import RedisStore

    store = RedisStore.from_settings(settings)
    ttl = settings.serving_popularity_cache_ttl_s
    policy = DecisionPolicy(
        bandit_policy=settings.bandit_policy, preferred_scope=settings.serving_bandit_scope,
        experiment=settings.serving_experiment_name, salt=settings.serving_experiment_salt,
        control_share=settings.serving_control_share, table_max_age_s=settings.serving_bandit_table_max_age_s,
        assignment=_experiment_on(settings, "decisions"),
    )
    catalogue = CatalogueView(store, settings.serving_catalogue_refresh_s)
    similar = SimilarIndexView(store, settings.serving_similar_refresh_s)
    new_items = NewItemsView(catalogue, similar, settings.serving_new_item_slots, settings.serving_catalogue_refresh_s)
    collector = Collector(settings)
    served = ServedLog(LogOutbox(settings, metrics.served_list), settings.topic_served, settings.serving_log_served,
                       settings.schema_registry_url)
    return Services(
        settings=settings, store=store,
        recommender=Recommender(store, PopularityCache(ttl) if ttl > 0 else None, catalogue=catalogue, blocks=True,
                                session_boost=settings.serving_session_boost,
                                new_items=new_items if settings.serving_new_item_slots > 0 else None),
        decider=Decider(store, policy), collector=collector, metrics=metrics, served=served,
        experiment=_experiment_on(settings, "recommendations"),
        similar=similar,
    )


def _experiment_on(settings: Settings, surface: str) -> Experiment | None:
    """The experiment of ``PULSE_EXPERIMENTS`` on ``surface`` (settings allow one per surface)."""
    return next((e for e in settings.experiments if e.surface == surface), None)


async def _live_alias(svc: Services, settings: Settings, metrics: Metrics) -> LiveAlias:
    """The alias follower, after its first read (a worker started after a promote serves the live prefix)."""
    alias = LiveAlias(svc.store, RedisKeys(settings.redis_prefix), settings.serving_alias_refresh_s,
                      on_switch=metrics.serving_prefix)
    with contextlib.suppress(StoreError):  # Redis down at start: the poll follows the alias later
        await alias.refresh()
    metrics.serving_prefix(svc.store.keys.prefix, switched=False)
    return alias


async def _item_polls(svc: Services) -> list[asyncio.Task[None]]:
    """The background reads of the catalogue, of every item's factors (similar items) and the new items, started.

    The factors are read once before serving: a known item does not answer 404 at start.
    """
    polls = []
    if svc.recommender.catalogue is not None:
        polls.append(asyncio.create_task(svc.recommender.catalogue.run()))
    if svc.similar is not None:
        with contextlib.suppress(StoreError):  # Redis down at start: the poll reads them later
            await svc.similar.refresh()
        polls.append(asyncio.create_task(svc.similar.run()))
    if svc.recommender.new_items is not None:
        polls.append(asyncio.create_task(svc.recommender.new_items.run()))
    return polls


def create_app(settings: Settings) -> FastAPI:
    """The serving app over the Redis and Kafka that ``settings`` name."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        svc = build_services(settings, metrics)
        app.state.services = svc
        ttl = settings.serving_popularity_cache_ttl_s
        # The all-users popularity in the in-process cache: the degraded path when Redis is down.
        refresher = (asyncio.create_task(poll_forever(svc.recommender.refresh_cache, ttl / 2, "popularity cache"))
                     if ttl > 0 else None)
        alias = await _live_alias(svc, settings, metrics)
        if svc.served is not None:
            await svc.served.check_topic()  # a missing served topic: logging off, with a warning
        polls = [asyncio.create_task(alias.run()), *await _item_polls(svc)]
        # What is built by now (modules, app, services: ~80k objects) lives as long as the process. Frozen,
        # the cycle collector's full collections, which come every few seconds under load, skip it: they
        # took ~45 ms each, a pause every request in flight waited for (the bench's p99).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            for task in (refresher, *polls):
                if task is not None:
                    task.cancel()
            left = await asyncio.to_thread(svc.collector.close)
            if svc.served is not None:
                left += await asyncio.to_thread(svc.served.close)
            if left:
                log.warning("%d events/impressions/served lists were not delivered before shutdown", left)
            await svc.store.close()

    app = ServingApp(
        title="Pulse serving", version="1", lifespan=lifespan,
        description="Live recommendations, sessions and bandit decisions from Redis; event collection to Kafka.",
        # Metrics are Prometheus (/metrics). FastAPI's native OpenTelemetry, on by default, looks up the
        # global OTel providers (and the environment) on every request even when nothing is configured.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.api_keys = ApiKeys.from_settings(settings)
    app.include_router(v1)
    app.include_router(ops)
    app.include_router(console)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(RecommendationsFastPath)  # innermost: inside the body limit and the metrics
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.serving_max_body_bytes,
                       per_path={BATCH_PATH: settings.serving_batch_max_bytes})
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    origins = cors_origins(settings)
    # Ahead of all of it: plain decisions (what the middleware would pass through unchanged).
    app.decisions_fast_path = DecisionsFastPath(metrics, settings.serving_max_body_bytes, cors=bool(origins))
    if origins:
        # Outermost: preflights are answered before the body limit, the metrics and the keys.
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)
    _add_error_handlers(app, metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI, metrics: Metrics) -> None:
    def error(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        metrics.errors.labels(reason).inc()
        return JSONResponse({"error": reason, "detail": detail}, status_code=status, headers=headers)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]]
        return error(400, "invalid_request", "; ".join(parts))

    async def on_decode(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DecodeError)
        return error(400, exc.reason.value, exc.detail)

    async def on_store(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StoreError)
        status = 500 if isinstance(exc, StoreCorruptError) else 503
        return error(status, exc.reason, str(exc))

    async def on_kafka(_: Request, exc: Exception) -> JSONResponse:
        return error(503, CollectorUnavailableError.reason, str(exc))

    async def on_decision(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, DecisionError)
        return error(exc.status, exc.reason, str(exc))

    async def on_unauthorized(_: Request, exc: Exception) -> JSONResponse:
        return error(401, "unauthorized", "a valid bearer API key is required", {"WWW-Authenticate": "Bearer"})

    async def on_forbidden(_: Request, exc: Exception) -> JSONResponse:
        return error(403, "forbidden", str(exc))

    async def on_batch(_: Request, exc: Exception) -> JSONResponse:
        return error(400, InvalidBatchError.reason, str(exc))

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        reason = _HTTP_REASONS.get(exc.status_code, f"http_{exc.status_code}")
        return error(exc.status_code, reason, str(exc.detail), dict(exc.headers or {}))

    async def on_anything(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error(500, "internal", "internal error (logged)")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DecodeError, on_decode)
    app.add_exception_handler(StoreError, on_store)
    app.add_exception_handler(StoreUnavailableError, on_store)
    app.add_exception_handler(CollectorUnavailableError, on_kafka)
    app.add_exception_handler(DecisionError, on_decision)
    app.add_exception_handler(Unauthorized, on_unauthorized)
    app.add_exception_handler(Forbidden, on_forbidden)
    app.add_exception_handler(InvalidBatchError, on_batch)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_anything)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema with request-validation errors documented as 400 :class:`Error` (what we send)."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                invalid = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if invalid.get("$ref", "").endswith("/HTTPValidationError") and responses.pop("422"):
                    responses.setdefault("400", {"description": "Bad Request", "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        # The batch body is read raw (per-event results), so FastAPI did not list its schema.
        batch = EventBatchIn.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in batch.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components["EventBatchIn"] = batch
        app.openapi_schema = schema
    return app.openapi_schema


def create_app_from_env() -> FastAPI:
    """``create_app(Settings())``: the factory uvicorn workers call (settings from ``PULSE_*``)."""
    return create_app(Settings.model_validate({}))
