"""``POST /v1/decisions`` answered ahead of the whole middleware stack (issue 19: <= 150 us per decision).

The decisions fast path used to be the innermost middleware: a decision still went through
uvicorn's proxy headers, FastAPI's telemetry and body-limit layers, Starlette's error middleware,
the metrics and body-limit middleware and the recommendations fast path (each an ``await`` and,
for most, a wrapped ``send``) - a tenth of a decision's server CPU (py-spy, bench/serving.py).
:class:`ServingApp` is the FastAPI app with one check in front: a request :class:`DecisionsFastPath`
takes is answered there and the stack never sees it. It takes only what the skipped layers would
pass through unchanged:

* no query string, exactly one ``Content-Type: application/json`` and one ``Content-Length`` within
  the body limit (anything else, e.g. chunked or too large, goes to the stack, which answers 413);
* no ``Origin`` header when CORS is on (a browser's request gets the CORS middleware's headers);
* when API keys are on, one ``Authorization: Bearer <key with the read scope>`` (else the route's 401/403);
* a body the route's own :class:`~serving.models.DecisionRequest` validates (else it is replayed to
  the stack as it came, so the 400 is the route's).

It then calls the route's :func:`serving.routes.decision_json`, answers errors with the app's own
exception handlers (the 500 handler for anything unexpected) and observes the request's latency
under the route template, as the metrics middleware would.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from serving.fastpath import DECISIONS, ROUTE_TEMPLATE_KEY, app_handler, authorized, read_body, replay, send_json
from serving.metrics import Metrics
from serving.models import DecisionRequest
from serving.routes import decision_json

__all__ = ["DecisionsFastPath", "ServingApp"]


class DecisionsFastPath:
    """Answers a plain ``POST /v1/decisions`` (see the module doc); ``stack`` answers everything else."""

    def __init__(self, metrics: Metrics, max_body_bytes: int, cors: bool) -> None:
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.cors = cors

    @staticmethod
    def takes(scope: Scope) -> bool:
        """Whether the request is a decision this path may answer (headers still to be checked)."""
        return (scope["type"] == "http" and scope["path"] == DECISIONS and scope["method"] == "POST"
                and not scope["query_string"] and not scope.get("root_path"))

    def plain(self, headers: list[tuple[bytes, bytes]], limit: int | None = None) -> bool:
        """One JSON content type, one length within the body limit (and ``limit``), no Origin under CORS."""
        types = lengths = 0
        length = b""
        for name, value in headers:
            if name == b"content-type":
                types += 1
                if value != b"application/json":
                    return False
            elif name == b"content-length":
                lengths += 1
                length = value
            elif name == b"origin" and self.cors:
                return False
        return (types == 1 and lengths == 1 and length.isdigit() and len(length) < 10
                and int(length) <= min(self.max_body_bytes, limit or self.max_body_bytes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send, stack: ASGIApp) -> None:  # noqa: D102
        started = time.perf_counter()
        app: Any = scope["app"]
        state: Any = app.state
        svc = getattr(state, "services", None)
        headers = scope["headers"]
        if svc is None or not self.plain(headers) or not authorized(state.api_keys, headers):
            await stack(scope, receive, send)
            return
        body, messages = await read_body(receive)
        try:
            request = DecisionRequest.model_validate_json(body)
        except ValidationError:
            await stack(scope, replay(messages, receive), send)  # the route answers its 400
            return
        scope[ROUTE_TEMPLATE_KEY] = DECISIONS
        try:
            answer = await decision_json(svc, request)
        except Exception as exc:  # noqa: BLE001 - every error gets the app's handler, as on the route
            handler = app_handler(app, exc) or app.exception_handlers[Exception]
            response = await handler(Request(scope, replay(messages, receive)), exc)
            await response(scope, receive, send)
            self.metrics.observe_latency("POST", DECISIONS, response.status_code, time.perf_counter() - started)
            return
        await send_json(send, answer)
        self.metrics.observe_latency("POST", DECISIONS, 200, time.perf_counter() - started)


class ServingApp(FastAPI):
    """FastAPI with :class:`DecisionsFastPath` in front of its middleware stack (when set)."""

    decisions_fast_path: DecisionsFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        fast = self.decisions_fast_path
        if fast is not None and fast.takes(scope):
            scope["app"] = self
            await fast(scope, receive, send, super().__call__)
            return
        await super().__call__(scope, receive, send)
