"""API keys with scopes, CORS, and request body limits.

``serving_api_keys`` is a comma-separated list of keys, each with the scope it grants:

* ``publishable:KEY``: post events, nothing else. Safe to ship in a web page; it may also come as
  ``?key=`` on the event routes, since ``navigator.sendBeacon`` cannot set an ``Authorization`` header.
* ``read:KEY``: recommendations, sessions, decisions and the console.
* ``KEY`` (or ``admin:KEY``): every route, erasure included.

No key configured = authentication off. A missing or unknown key is 401; a known key without the
route's scope is 403.

>>> keys = ApiKeys.parse("k1, read:rk, publishable:pk")
>>> keys.allows("k1", KeyScope.ADMIN), keys.allows("k3"), ApiKeys.parse(None).enabled
(True, False, False)
>>> keys.allows("pk", KeyScope.EVENTS), keys.allows("pk", KeyScope.READ), keys.allows("rk", KeyScope.READ)
(True, False, True)
>>> keys.allows("read:rk")
False
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from enum import StrEnum

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from config import Settings

__all__ = [
    "ApiKeys", "BodyLimitMiddleware", "Forbidden", "KeyScope", "Unauthorized", "bearer", "cors_origins", "require",
]

#: Declares the scheme in OpenAPI; our dependency decides (so a missing key is 401, not 403).
bearer = HTTPBearer(auto_error=False, description="API key, when the server has keys configured")


class KeyScope(StrEnum):
    """What a key may do."""

    EVENTS = "events"
    READ = "read"
    ADMIN = "admin"


class Unauthorized(Exception):
    """No or an unknown API key (401)."""


class Forbidden(Exception):
    """A known API key without the route's scope (403)."""

    def __init__(self, scope: KeyScope) -> None:
        super().__init__(f"this API key may not use this route (it needs the {scope.value} scope)")


_KINDS = {"admin": frozenset(KeyScope), "read": frozenset({KeyScope.READ}), "publishable": frozenset({KeyScope.EVENTS})}
PUBLISHABLE = _KINDS["publishable"]


class ApiKeys:
    """The configured keys and their scopes; compared in constant time."""

    def __init__(self, keys: list[tuple[bytes, frozenset[KeyScope]]]) -> None:
        self._keys = keys

    @classmethod
    def parse(cls, value: SecretStr | str | None) -> ApiKeys:
        """Keys from a comma-separated (secret) string of ``[kind:]key``; empty = authentication off."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
        keys = []
        for entry in (part.strip() for part in raw.split(",")):
            kind, colon, key = entry.partition(":")
            if colon and kind in _KINDS:
                keys.append((key.strip().encode(), _KINDS[kind]))
            elif entry:
                keys.append((entry.encode(), _KINDS["admin"]))
        return cls([(key, scopes) for key, scopes in keys if key])

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """The keys of ``serving_api_keys``."""
        return cls.parse(settings.serving_api_keys)

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured."""
        return bool(self._keys)

    def scopes(self, key: str) -> frozenset[KeyScope] | None:
        """The scopes of ``key``; ``None`` when it is not a configured key."""
        given = key.encode()
        found: frozenset[KeyScope] | None = None
        for known, scopes in self._keys:  # every key compared: the time does not tell which matched
            if hmac.compare_digest(given, known):
                found = scopes if found is None else found | scopes
        return found

    def allows(self, key: str, scope: KeyScope | None = None) -> bool:
        """True when ``key`` is configured (and has ``scope``, when one is given)."""
        scopes = self.scopes(key)
        return scopes is not None and (scope is None or scope in scopes)


def require(scope: KeyScope, key_in_query: bool = False) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency: 401 without a known key, 403 when the key lacks ``scope`` (keys off: pass).

    ``key_in_query``: a publishable key may come as ``?key=`` (beacons cannot send headers).
    """

    async def check(request: Request) -> None:
        keys: ApiKeys = request.app.state.api_keys
        if not keys.enabled:
            return
        credentials: HTTPAuthorizationCredentials | None = await bearer(request)
        if credentials is not None:
            scopes = keys.scopes(credentials.credentials)
        elif key_in_query and (given := request.query_params.get("key")):
            scopes = keys.scopes(given)
            if scopes is not None and scopes != PUBLISHABLE:
                raise Unauthorized()  # only publishable keys belong in URLs (logs, histories)
        else:
            scopes = None
        if scopes is None:
            raise Unauthorized()
        if scope not in scopes:
            raise Forbidden(scope)

    return check


def cors_origins(settings: Settings) -> list[str]:
    """The origins of ``serving_cors_origins``.

    >>> cors_origins(Settings(serving_cors_origins="https://shop.example, http://localhost:3000"))
    ['https://shop.example', 'http://localhost:3000']
    """
    return [origin.strip() for origin in settings.serving_cors_origins.split(",") if origin.strip()]


class _TooLarge(HTTPException):
    """A streamed body passed the limit (an HTTPException so FastAPI's body parsing lets it through)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes`` (``per_path`` overrides it for some paths).

    Checked by Content-Length up front, else while streaming.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = max_bytes + 1
                if declared > max_bytes:
                    await _reject(send, max_bytes)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _TooLarge(max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _reject(send, max_bytes)


async def _reject(send: Send, max_bytes: int) -> None:
    body = b'{"error":"body_too_large","detail":"request body is larger than %d bytes"}' % max_bytes
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
