"""Bearer API keys and request body limits.

>>> check = ApiKeys.parse("k1, k2")
>>> check.allows("k2"), check.allows("k3"), ApiKeys.parse(None).enabled
(True, False, False)
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ApiKeys", "BodyLimitMiddleware", "Unauthorized", "bearer", "require_api_key"]

#: Declares the scheme in OpenAPI; our dependency decides (so a missing key is 401, not 403).
bearer = HTTPBearer(auto_error=False, description="API key, when the server has keys configured")


class Unauthorized(Exception):
    """No or a wrong API key."""


class ApiKeys:
    """The configured keys; compared in constant time."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = keys

    @classmethod
    def parse(cls, value: SecretStr | str | None) -> ApiKeys:
        """Keys from a comma-separated (secret) string; empty = authentication off."""
        raw = value.get_secret_value() if isinstance(value, SecretStr) else (value or "")
        return cls([key.strip().encode() for key in raw.split(",") if key.strip()])

    @property
    def enabled(self) -> bool:
        """True when at least one key is configured."""
        return bool(self._keys)

    def allows(self, key: str) -> bool:
        """True when ``key`` is one of the configured keys."""
        given = key.encode()
        return any(hmac.compare_digest(given, known) for known in self._keys)


async def require_api_key(request: Request) -> None:
    """FastAPI dependency: 401 unless keys are off or the bearer token is one of them."""
    keys: ApiKeys = request.app.state.api_keys
    if not keys.enabled:
        return
    credentials: HTTPAuthorizationCredentials | None = await bearer(request)
    if credentials is None or not keys.allows(credentials.credentials):
        raise Unauthorized()


class _TooLarge(HTTPException):
    """A streamed body passed the limit (an HTTPException so FastAPI's body parsing lets it through)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body is larger than {max_bytes} bytes")


class BodyLimitMiddleware:
    """413 for request bodies over ``max_bytes``: by Content-Length up front, else while streaming."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                if declared > self.max_bytes:
                    await _reject(send, self.max_bytes)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
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
                await _reject(send, self.max_bytes)


async def _reject(send: Send, max_bytes: int) -> None:
    body = b'{"error":"body_too_large","detail":"request body is larger than %d bytes"}' % max_bytes
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
