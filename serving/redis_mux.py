r"""One multiplexed Redis connection for the shim's hot reads: concurrent requests share it, pipelined.

redis-py's asyncio client checks a connection out of its pool per call, health-checks it with a
non-blocking read, and wraps each send in ``asyncio.wait_for`` (a task) and each reply in a
timeout: on the recommendations path that was a third of the server's CPU per request
(bench/serving.py). Here every caller writes its commands to one connection and awaits futures
that the protocol resolves in reply order (Redis answers in order on a connection), so concurrent
requests' commands also leave in fewer writes. Replies are parsed by hiredis.

Failure behaviour matches what :class:`~serving.store.RedisStore` maps: a refused/lost connection
raises ``redis.exceptions.ConnectionError``, a reply later than ``timeout_s`` raises
``redis.exceptions.TimeoutError`` (and drops the connection: the replies still owed on it would be
out of step; one watchdog timer per connection checks the oldest call still waiting, instead of a
timer armed and cancelled per call, which cost ~11 us of a request's CPU), an error reply raises
``redis.exceptions.ResponseError`` after every reply of the call was read (NOAUTH/WRONGPASS raise
``AuthenticationError``, a ``ConnectionError``, as in redis-py). The next call reconnects. Read-only
commands are retried once on a connection found closed (an idle connection the server dropped). Plain
TCP and unix sockets; a TLS URL (``rediss://``) is not handled here (:meth:`MultiplexedRedis.from_url`
returns ``None`` and the store keeps using redis-py).

>>> pack([("HGETALL", "k")])
b'*2\r\n$7\r\nHGETALL\r\n$1\r\nk\r\n'
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection, parse_url
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["MultiplexedRedis", "pack"]

Command = tuple[str | bytes, ...]
_AUTH_ERRORS = ("NOAUTH", "WRONGPASS")


def pack(commands: Sequence[Command]) -> bytes:
    """Commands in the Redis protocol (RESP arrays of bulk strings)."""
    out: list[bytes] = []
    for command in commands:
        out.append(b"*%d\r\n" % len(command))
        for arg in command:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """Feeds bytes to hiredis and resolves the waiting futures in reply order.

    With ``timeout_s``, a call's last reply owed longer than that drops the connection and fails every
    call waiting on it with ``redis.exceptions.TimeoutError`` (:meth:`_watch`).
    """

    def __init__(self, timeout_s: float | None = None) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pending: list[bytes] = []  # commands of this event-loop step, written together (send)
        self.timeout_s = timeout_s
        # (deadline, the call's last reply) per call, oldest first; the watchdog's timer, if armed.
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = collections.deque()
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not self.waiters:  # nobody asked: the stream is out of step
                self.abort(RedisConnectionError("unexpected reply from Redis"))
                return
            waiter = self.waiters.popleft()
            if not waiter.done():  # a cancelled caller's reply is read and dropped
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_watching()
        self._fail(RedisConnectionError(f"connection to Redis lost ({exc or 'closed by the server'})"))

    def abort(self, error: Exception) -> None:
        """Drop the connection and fail every call still waiting on it."""
        self.closed = True
        self._stop_watching()
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)

    def send(self, data: bytes, count: int) -> list[asyncio.Future[Any]]:
        """Queue ``data`` for the end of this event-loop step; futures of its ``count`` replies, in order.

        The commands of every request handled in one step leave in one write (one syscall here, one
        read for Redis), which under concurrent load is most of what a request costs both.
        """
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(count)]
        if not self.pending:
            loop.call_soon(self._flush)
        self.pending.append(data)
        self.waiters.extend(futures)
        if self.timeout_s is not None and futures:
            deadline = loop.time() + self.timeout_s
            self._deadlines.append((deadline, futures[-1]))
            if self._watchdog is None:
                self._watchdog = loop.call_at(deadline, self._watch)
        return futures

    def _watch(self) -> None:
        """The watchdog: drop the connection if the oldest call still waiting is past its deadline.

        Armed at the oldest waiting call's deadline, so it fires at most once per ``timeout_s`` while
        calls are answered in time (replies come in order: an answered call's earlier ones are too).
        """
        self._watchdog = None
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        if not deadlines or self.closed:
            return
        loop = asyncio.get_running_loop()
        if deadlines[0][0] <= loop.time():
            self.abort(RedisTimeoutError(f"no reply from Redis in {self.timeout_s} s"))
        else:
            self._watchdog = loop.call_at(deadlines[0][0], self._watch)

    def _stop_watching(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._deadlines.clear()

    def _flush(self) -> None:
        data, self.pending = b"".join(self.pending), []
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)


class MultiplexedRedis:
    """Pipelined commands over one shared connection (see the module doc)."""

    def __init__(self, *, host: str = "localhost", port: int = 6379, path: str | None = None, db: int = 0,
                 username: str | None = None, password: str | None = None, timeout_s: float = 0.5,
                 connect_timeout_s: float = 0.5) -> None:
        self.host, self.port, self.path, self.db = host, port, path, db
        self.username, self.password = username, password
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

    @classmethod
    def from_url(cls, url: str, *, password: str | None = None, timeout_s: float = 0.5,
                 connect_timeout_s: float = 0.5) -> MultiplexedRedis | None:
        """For a ``redis://`` or ``unix://`` URL; ``None`` for anything else (TLS, unknown options).

        >>> mux = MultiplexedRedis.from_url("redis://:secret@cache:6380/2")
        >>> (mux.host, mux.port, mux.db, mux.password)
        ('cache', 6380, 2, 'secret')
        >>> MultiplexedRedis.from_url("rediss://cache:6380") is None
        True
        """
        kwargs: dict[str, Any] = dict(parse_url(url))
        connection_class = kwargs.pop("connection_class", Connection)
        if connection_class not in (Connection, UnixDomainSocketConnection):
            return None
        known = {"host", "port", "path", "db", "username", "password"}
        if set(kwargs) - known:
            return None
        if password is not None:
            kwargs["password"] = password
        kwargs["db"] = int(kwargs.get("db") or 0)
        return cls(timeout_s=timeout_s, connect_timeout_s=connect_timeout_s, **kwargs)

    async def execute(self, commands: Sequence[Command], *, read_only: bool = True) -> list[Any]:
        """Send ``commands`` in one write and return their replies (see the module doc for errors)."""
        reused = self._protocol is not None and not self._protocol.closed
        try:
            return await self._execute(commands)
        except RedisConnectionError:
            if not (read_only and reused):
                raise
            return await self._execute(commands)  # once, on a new connection: the old one had gone while idle

    async def _execute(self, commands: Sequence[Command]) -> list[Any]:
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        replies = await self._replies(protocol, commands)
        for reply in replies:
            if isinstance(reply, ResponseError):
                if str(reply).startswith(_AUTH_ERRORS):  # as redis-py: a connection problem, not a data one
                    raise AuthenticationError(str(reply))
                raise reply
        return replies

    async def _replies(self, protocol: _Protocol, commands: Sequence[Command]) -> list[Any]:
        """Send ``commands`` and wait for every reply (past ``timeout_s``: ``RedisTimeoutError``, see ``_watch``)."""
        futures = protocol.send(pack(commands), len(commands))
        return [await future for future in futures]

    async def _connect(self) -> _Protocol:
        if self._connecting is None:  # one connection attempt at a time; every caller waits for it
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    def _connected(self, attempt: asyncio.Future[_Protocol]) -> None:
        self._connecting = None
        if not attempt.cancelled() and attempt.exception() is None:
            self._protocol = attempt.result()

    def _new_protocol(self) -> _Protocol:
        return _Protocol(self.timeout_s)

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                if self.path:
                    _, protocol = await loop.create_unix_connection(self._new_protocol, self.path)
                else:
                    _, protocol = await loop.create_connection(self._new_protocol, self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis ({type(exc).__name__}: {exc})") from exc
        hello: list[Command] = []
        if self.password:
            hello.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            hello.append(("SELECT", str(self.db)))
        if hello:
            try:
                replies = await self._replies(protocol, hello)
            except RedisTimeoutError:
                raise RedisConnectionError("Redis did not answer AUTH/SELECT in time") from None
            for reply in replies:
                if isinstance(reply, ResponseError):
                    protocol.abort(RedisConnectionError(str(reply)))
                    raise RedisConnectionError(f"Redis refused the connection setup: {reply}")
        return protocol

    async def close(self) -> None:
        """Close the connection (a later call reconnects)."""
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
