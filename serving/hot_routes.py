"""The two hot routes answered inside uvicorn's HTTP protocol, without an ASGI cycle (issues 16 and 19).

A plain recommendations GET or decision POST costs ~150-370 us of server CPU at 2,000 rps paced
on this 2-core machine, of which Pulse's own code is a small part: the rest is uvicorn's per-request
machinery (a ``RequestResponseCycle`` with its ``asyncio.Event``, the proxy-headers middleware,
the ASGI app and its ``send`` messages, whose header loop runs two regexes per header) and the
event loop. :class:`HotRoutesProtocol` (mixed into the server's httptools protocol) takes the
request the fast paths (:mod:`serving.fastpath`, :mod:`serving.decision_fastpath`) would answer
and answers it itself: the same checks, the same handlers (``recommendations_json``,
``decision_json``), the response written as one block of bytes with uvicorn's default headers.

Anything else goes to uvicorn unchanged, decided from the request line and headers alone: another
path or method, a non-canonical query, a pipelined request (one arriving while a response is
owed), ``Expect: 100-continue``, a body larger than fits in one read-buffer, ``Origin`` when CORS
is on, a missing or wrong key, a server with ``root_path`` or ``limit_concurrency``. A decision
body that does not validate, and any error, is answered by the app itself (through an ordinary
``RequestResponseCycle`` with the body already read), so 400s, 401s, 503s and 500s stay the app's.
Latency is observed under the route template, as the metrics middleware would.

>>> split_url(b"/v1/users/u1/recommendations?k=5")
(b'/v1/users/u1/recommendations', b'k=5')
>>> split_url(b"/v1/decisions")
(b'/v1/decisions', b'')
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from serving.fastpath import DECISIONS, PREFIX, SUFFIX, TEMPLATE, app_handler, authorized, parse_options, user_id_of
from serving.models import DecisionRequest
from serving.recommendations import now_ms
from serving.routes import PREFIX_HEADER, decision_answer, decision_json, recommendations_json

if TYPE_CHECKING:
    from serving.decision_fastpath import ServingApp
    from serving.routes import Services

__all__ = ["HotRequest", "HotRoutesProtocol", "split_url"]

_JSON_HEADERS = b"content-type: application/json\r\n"
_DECISIONS = DECISIONS.encode()
_PREFIX, _SUFFIX = PREFIX.encode(), SUFFIX.encode()


def split_url(url: bytes) -> tuple[bytes, bytes]:
    """Path and query string of a request target (origin form: what a client on the hot routes sends)."""
    path, _, query = url.partition(b"?")
    return path, query.partition(b"#")[0]


class HotRequest:
    """A hot request in flight: what uvicorn's protocol reads of its ``cycle``, and the handler's task.

    The protocol calls ``message_event.set()`` when body bytes arrive or the connection is lost;
    the request starts once its body is complete.
    """

    __slots__ = ("body", "disconnected", "keep_alive", "kind", "message_event", "more_body", "options", "protocol",
                 "response_complete", "services", "started", "started_at", "user_id")

    def __init__(self, protocol: HotRoutesProtocol, services: Services, kind: str, keep_alive: bool,
                 user_id: str | None = None, options: Any = None) -> None:
        self.protocol = protocol
        self.services = services  # the app's, looked up once per request (Starlette's State is a __getattr__)
        self.kind = kind
        self.keep_alive = keep_alive
        self.user_id = user_id
        self.options = options
        self.body = bytearray()
        self.more_body = True
        self.disconnected = False
        self.response_complete = False
        self.started = False
        self.started_at = time.perf_counter()
        self.message_event = self

    def set(self) -> None:
        """Body complete (or connection lost): start answering, once."""
        if self.started or self.more_body or self.disconnected:
            return
        self.started = True
        if self.kind == "decision" and self.decide_now():
            return
        protocol = self.protocol
        task = protocol.loop.create_task(self.run())
        task.add_done_callback(protocol.tasks.discard)
        protocol.tasks.add(task)

    def decide_now(self) -> bool:
        """A decision whose arm tables are fresh, answered in this event-loop step (else ``False``: the task's)."""
        svc = self.services
        try:
            request = DecisionRequest.model_validate_json(self.body)
            made = svc.decider.decide_now(request, now_ms())
        except Exception:  # noqa: BLE001 - the task decides again and answers the error as the route would
            return False
        if made is None:
            return False  # the tables must be read first
        self.respond(decision_answer(svc, made), b"")
        return True

    async def run(self) -> None:
        """Answer: the handler's body written with the default headers, or the app's answer."""
        svc = self.services
        try:
            if self.kind == "decision":
                try:
                    request = DecisionRequest.model_validate_json(self.body)
                except ValidationError:
                    await self.to_app()  # the route answers its 400
                    return
                body = await decision_json(svc, request)
                extra = b""
            else:
                (k, exclude_seen, explain, segment), options = self.options
                body, prefix = await recommendations_json(svc, self.user_id or "", k, exclude_seen, explain, segment,
                                                          **options)
                extra = b"%s: %s\r\n" % (PREFIX_HEADER.encode(), prefix.encode())
        except Exception as exc:  # noqa: BLE001 - every error gets the app's handler, as on the route
            await self.error(exc)
            return
        self.respond(body, extra)

    def respond(self, body: bytes, extra: bytes) -> None:
        """A 200 with ``body`` as JSON: status line, uvicorn's default headers and ``extra`` in one write.

        The write leaves with the other writes of this event-loop step, after it (the server's transport
        joins them): sent at once, between reading one connection and the next, each answer woke the
        client on its own (decisions unpaced: 83 -> 63 us of server CPU, wrk 17 -> 10 us, per request).
        """
        protocol = self.protocol
        if not self.disconnected:
            head = protocol.default_head()
            close = b"" if self.keep_alive else b"connection: close\r\n"
            protocol.transport.write(b"%s%scontent-length: %d\r\n%s%s%s\r\n%s" % (
                STATUS_LINE[200], head, len(body), _JSON_HEADERS, extra, close, body))
        self.finish(200)

    def finish(self, status: int, sent_by_cycle: bool = False) -> None:
        """The response is out: metrics, then (unless a cycle sent it) keep-alive or close and the next request."""
        self.response_complete = True
        protocol = self.protocol
        method, route = ("POST", DECISIONS) if self.kind == "decision" else ("GET", TEMPLATE)
        self.services.metrics.observe_latency(method, route, status, time.perf_counter() - self.started_at)
        if self.disconnected or sent_by_cycle:
            return
        if not self.keep_alive:
            protocol.transport.close()
        protocol.on_response_complete()

    def _cycle(self) -> RequestResponseCycle:
        """An ordinary cycle for this request with its body read (the app answers through it)."""
        protocol = self.protocol
        cycle = RequestResponseCycle(
            scope=protocol.scope, transport=protocol.transport, flow=protocol.flow, logger=protocol.logger,
            access_logger=protocol.access_logger, access_log=protocol.access_log,
            default_headers=protocol.server_state.default_headers, message_event=asyncio.Event(),
            expect_100_continue=False, keep_alive=self.keep_alive, on_response=protocol.on_response_complete)
        cycle.body, cycle.more_body, cycle.disconnected = self.body, False, self.disconnected
        cycle.message_event.set()
        if protocol.cycle is self:
            protocol.cycle = cycle
        return cycle

    async def to_app(self) -> None:
        """Let the whole app answer (its middleware observes the latency)."""
        self.response_complete = True
        await self._cycle().run_asgi(self.protocol.app)

    async def error(self, exc: Exception) -> None:
        """The app's exception handler's response, as the route's would be (the 500 handler for anything unexpected)."""
        app: Any = self.protocol.serving_app
        cycle = self._cycle()
        self.response_complete = True
        scope: Any = cycle.scope
        scope["app"] = app
        handler = app_handler(app, exc) or app.exception_handlers[Exception]
        receive: Any = cycle.receive
        response = await handler(Request(scope, receive), exc)
        await response(scope, receive, cycle.send)
        self.finish(response.status_code, sent_by_cycle=True)


class HotRoutesProtocol:
    """Mixin for uvicorn's ``HttpToolsProtocol``: hot requests become :class:`HotRequest` (see the module doc)."""

    serving_app: ServingApp | None = None
    _app_checked = False
    _head_source: object = None
    _head: bytes = b""

    # provided by HttpToolsProtocol
    app: Any
    config: Any
    cycle: Any
    flow: Any
    headers: list[tuple[bytes, bytes]]
    logger: Any
    access_logger: Any
    access_log: bool
    loop: asyncio.AbstractEventLoop
    parser: Any
    pipeline: Any
    scope: Any
    server_state: Any
    tasks: set[asyncio.Task[None]]
    transport: Any
    url: bytes
    expect_100_continue: bool

    if TYPE_CHECKING:
        def on_response_complete(self) -> None: ...  # noqa: D102 - HttpToolsProtocol's

    def default_head(self) -> bytes:
        """The server's default headers (server, date) as bytes, rebuilt when uvicorn renews them (every second)."""
        source = self.server_state.default_headers
        if source is not self._head_source:
            self._head = b"".join(b"%s: %s\r\n" % pair for pair in source)
            self._head_source = source
        return self._head

    def hot_request(self) -> HotRequest | None:
        """The request whose headers just arrived as a :class:`HotRequest`, or ``None`` (uvicorn's path)."""
        if self.cycle is not None and not self.cycle.response_complete:
            return None  # pipelined behind a response still owed: uvicorn queues it
        if not self._app_checked:
            self._app_checked = True
            plain_server = not self.config.root_path and self.config.limit_concurrency is None
            self.serving_app = _serving_app(self.app) if plain_server else None
        app = self.serving_app
        if app is None:
            return None
        state = app.state
        services = getattr(state, "services", None)
        if services is None or self.expect_100_continue:
            return None
        fast = app.decisions_fast_path
        method = self.parser.get_method()
        path, query = split_url(self.url)
        version = self.parser.get_http_version()
        keep_alive = version != "1.0" and self.parser.should_keep_alive()
        if method == b"POST" and path == _DECISIONS and not query and fast is not None:
            if (self.parser.should_upgrade() or not fast.plain(self.headers, HIGH_WATER_LIMIT)
                    or not authorized(state.api_keys, self.headers)):
                return None
            return self._scoped(HotRequest(self, services, "decision", keep_alive), "POST", version, path, query)
        if method != b"GET" or not path.startswith(_PREFIX) or not path.endswith(_SUFFIX) or b"%" in path:
            return None
        user_id = user_id_of(path.decode("ascii", "replace"))
        parsed = parse_options(query) if user_id is not None else None
        if parsed is None or self.parser.should_upgrade() or not authorized(state.api_keys, self.headers):
            return None
        if fast is not None and fast.cors and any(name == b"origin" for name, _ in self.headers):
            return None  # a browser's request gets the CORS middleware's headers
        return self._scoped(HotRequest(self, services, "recommendations", keep_alive, user_id, parsed), "GET", version,
                            path, query)

    def _scoped(self, request: HotRequest, method: str, version: str, path: bytes, query: bytes) -> HotRequest:
        """The scope uvicorn would have built (the app needs it if it ends up answering)."""
        scope = self.scope
        scope["method"] = method
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = path.decode("ascii")
        scope["raw_path"] = path
        scope["query_string"] = query
        return request


def _serving_app(app: Any) -> ServingApp | None:
    """The :class:`ServingApp` under uvicorn's wrappers (proxy headers), if the server runs one."""
    from serving.decision_fastpath import ServingApp

    for _ in range(8):
        if isinstance(app, ServingApp):
            return app
        app = getattr(app, "app", None)
    return None
