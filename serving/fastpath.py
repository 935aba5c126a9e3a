"""The hot path of ``GET /v1/users/{user_id}/recommendations`` without FastAPI's per-request machinery.

FastAPI resolves dependencies and validates every query parameter through generic code on each
request; for the recommendations read that was most of the CPU a request cost (bench/serving.py).
:class:`RecommendationsFastPath` is an ASGI middleware that answers the *plain* form of that request
itself: a ``GET`` of exactly ``/v1/users/<id>/recommendations`` whose id and query parameters are
already in canonical form (``k`` digits within 1..MAX_K, booleans ``true``/``false``/``1``/``0``, a
``segment`` of id characters, no duplicates, no percent-encoding; the shop options ``exclude``,
``category``, ``exclude_category`` (repeatable, id characters), ``session_boost`` (0-100, at most
6 decimals) and ``max_per_category`` (digits) in the same canonical form; no other parameter) and, when API
keys are on, one ``Authorization: Bearer <key with the read scope>`` header. It then calls the same
:func:`serving.routes.recommendations_json` as the route, and answers errors with the app's own
exception handlers. Anything else, valid or not, goes on to FastAPI unchanged, so the route (and
its documented schema, its 400/401 bodies) stays the one definition of the endpoint.

:mod:`serving.decision_fastpath` does the same for ``POST /v1/decisions``, ahead of the whole
middleware stack, with the helpers below.

>>> parse_query(b"k=10&explain=true")
(10, True, True, None)
>>> parse_query(b""), parse_query(b"k=0"), parse_query(b"k=10&k=11"), parse_query(b"segment=a%2Fb")
((10, True, False, None), None, None, None)
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.models import MAX_FILTER_VALUES, MAX_ID_LENGTH, MAX_K
from serving.security import ApiKeys, KeyScope

__all__ = ["DECISIONS", "ROUTE_TEMPLATE_KEY", "RecommendationsFastPath", "app_handler", "authorized", "parse_options",
           "parse_query", "read_body", "replay", "send_json", "user_id_of"]

PREFIX = "/v1/users/"
SUFFIX = "/recommendations"
TEMPLATE = "/v1/users/{user_id}/recommendations"
DECISIONS = "/v1/decisions"
#: Scope key naming the route template of a request answered without the router.
ROUTE_TEMPLATE_KEY = "pulse.route_template"
#: Ids without ``+`` and ``=`` (those read differently in a query string): the fast path's own subset.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:@-]+")
_PATH_ID = re.compile(r"[A-Za-z0-9_.:@+=-]+")
_K = re.compile(rb"[1-9][0-9]{0,3}")
_BOOLS = {b"true": True, b"false": False, b"1": True, b"0": False}
_BOOST = re.compile(rb"(?:[0-9]|[1-9][0-9])(?:\.[0-9]{1,6})?|100")
#: Repeatable filters of the shop: query name -> keyword of Recommender.recommend.
_LISTS = {b"exclude": "exclude", b"category": "categories", b"exclude_category": "exclude_categories"}

Base = tuple[int, bool, bool, str | None]


def parse_query(query: bytes) -> Base | None:
    """``(k, exclude_seen, explain, segment)`` of a canonical query string, else ``None`` (let FastAPI decide)."""
    parsed = parse_options(query)
    return parsed[0] if parsed is not None and not parsed[1] else None


def parse_options(query: bytes) -> tuple[Base, dict[str, Any]] | None:
    """:func:`parse_query`'s tuple and the shop options (keywords of ``recommendations_json``), else ``None``.

    >>> parse_options(b"k=5&exclude=i1&exclude=i2&session_boost=0.5&max_per_category=3")
    ((5, True, False, None), {'exclude': ['i1', 'i2'], 'session_boost': 0.5, 'max_per_category': 3})
    >>> parse_options(b"session_boost=100.5"), parse_options(b"max_per_category=0"), parse_options(b"exclude=a+b")
    (None, None, None)
    """
    k, exclude_seen, explain, segment = 10, True, False, None
    options: dict[str, Any] = {}
    if not query:
        return (k, exclude_seen, explain, segment), options
    seen: set[bytes] = set()
    for part in query.split(b"&"):
        name, eq, value = part.partition(b"=")
        if not eq or not value or (name in seen and name not in _LISTS):
            return None
        seen.add(name)
        if name in _LISTS:
            text = value.decode("ascii", "replace")
            values = options.setdefault(_LISTS[name], [])
            if len(value) > MAX_ID_LENGTH or _PLAIN_ID.fullmatch(text) is None or len(values) >= MAX_FILTER_VALUES:
                return None
            values.append(text)
        elif name == b"session_boost":
            if _BOOST.fullmatch(value) is None:
                return None
            options["session_boost"] = float(value)
        elif name == b"max_per_category":
            if _K.fullmatch(value) is None or int(value) > MAX_K:
                return None
            options["max_per_category"] = int(value)
        elif name == b"k":
            if _K.fullmatch(value) is None or int(value) > MAX_K:
                return None
            k = int(value)
        elif name == b"exclude_seen" or name == b"explain":
            flag = _BOOLS.get(value)
            if flag is None:
                return None
            if name == b"explain":
                explain = flag
            else:
                exclude_seen = flag
        elif name == b"segment":
            if len(value) > MAX_ID_LENGTH:
                return None
            text = value.decode("ascii", "replace")
            if _PLAIN_ID.fullmatch(text) is None:
                return None
            segment = text
        else:
            return None
    return (k, exclude_seen, explain, segment), options


def user_id_of(path: str) -> str | None:
    """The user id of a plain recommendations path, else ``None``."""
    if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
        return None
    user_id = path[len(PREFIX):-len(SUFFIX)]
    if not 0 < len(user_id) <= MAX_ID_LENGTH or _PATH_ID.fullmatch(user_id) is None:
        return None
    return user_id


def authorized(keys: ApiKeys, headers: list[tuple[bytes, bytes]]) -> bool:
    """Keys off, or exactly one ``Authorization: Bearer <key with the read scope>`` header."""
    if not keys.enabled:
        return True
    found = [value for name, value in headers if name == b"authorization"]
    if len(found) != 1 or not found[0].startswith(b"Bearer "):
        return False
    token = found[0][7:]
    usable = bool(token) and b" " not in token and token.isascii()
    return usable and keys.allows(token.decode("ascii"), KeyScope.READ)


class RecommendationsFastPath:
    """Answers the plain recommendations GET directly; passes everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        user_id = user_id_of(scope["path"])
        parsed = parse_options(scope["query_string"]) if user_id is not None else None
        app: Any = scope.get("app")
        state: Any = getattr(app, "state", None)
        svc = getattr(state, "services", None)
        if user_id is None or parsed is None or svc is None or not authorized(state.api_keys, scope["headers"]):
            await self.app(scope, receive, send)
            return
        from serving.routes import PREFIX_HEADER, recommendations_json

        scope[ROUTE_TEMPLATE_KEY] = TEMPLATE  # MetricsMiddleware's route label (the router's route.path)
        (k, exclude_seen, explain, segment), options = parsed
        try:
            body, prefix = await recommendations_json(svc, user_id, k, exclude_seen, explain, segment, **options)
        except Exception as exc:
            handler = app_handler(app, exc)
            if handler is None:
                raise  # ServerErrorMiddleware: the 500 handler, as for the route
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        await send_json(send, body, [(PREFIX_HEADER.encode(), prefix.encode())])


async def read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    """The whole request body and the messages it came in (a body over the limit raises in ``receive``)."""
    messages: list[Message] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            break
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request"), messages


def replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then whatever ``receive`` gives (a disconnect)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed


async def send_json(send: Send, body: bytes, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """What Response(body, media_type="application/json") sends, without building one."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json"),
                            *(extra_headers or ())]})
    await send({"type": "http.response.body", "body": body})


def app_handler(app: Any, exc: Exception) -> Any:
    """The app's handler for ``exc`` as Starlette's ExceptionMiddleware picks it (``Exception`` excluded)."""
    handlers = app.exception_handlers
    for cls in type(exc).__mro__:
        if cls is Exception:
            return None
        if cls in handlers:
            return handlers[cls]
    return None
