"""Running the app: ``pulse serve`` (uvicorn in the foreground) and a background server for tests and benches."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config import Settings
from serving.hot_routes import HotRoutesProtocol

__all__ = ["CoalescingHttpToolsProtocol", "run", "running", "worker_count"]


class _CoalescingTransport:
    """A transport whose writes of one event-loop step leave in one ``send``.

    uvicorn writes a response's status line and headers, then its body, as two writes (two
    syscalls, two TCP segments on a small response); this joins them. Everything else is the
    wrapped transport's; ``close`` sends what is pending first.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HotRoutesProtocol, HttpToolsProtocol):
    """uvicorn's httptools protocol: each response in one write, the hot routes answered in the protocol.

    One write: :class:`_CoalescingTransport`; hot routes: :class:`~serving.hot_routes.HotRoutesProtocol`.
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # noqa: D102
        wrapped: Any = _CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)

    def on_headers_complete(self) -> None:  # noqa: D102
        hot = self.hot_request()
        if hot is None:
            super().on_headers_complete()
        else:
            self.cycle = hot


def _http(settings: Settings) -> type[asyncio.Protocol] | str:
    return CoalescingHttpToolsProtocol if settings.serving_http == "httptools" else settings.serving_http


def _config(app: FastAPI | str, host: str, port: int, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=5, **extra)  # type: ignore[arg-type]


def worker_count(settings: Settings) -> int:
    """``serving_workers``, else one per CPU core this process may run on."""
    return settings.serving_workers or len(os.sched_getaffinity(0)) or 1


def run(settings: Settings) -> None:
    """Serve in the foreground until interrupted (:func:`worker_count` processes sharing the port)."""
    workers = worker_count(settings)
    if workers > 1:
        # Workers are separate processes: each builds its app from the environment (PULSE_*); uvicorn's
        # supervisor binds the port once and every worker accepts on that socket (the kernel spreads connections).
        os.environ.update(settings.to_env())
        uvicorn.run("serving.app:create_app_from_env", factory=True, host=settings.serving_host,
                    port=settings.serving_port, workers=workers, log_level="info",
                    access_log=False, http=_http(settings), loop=settings.serving_loop)
        return
    from serving.app import create_app

    uvicorn.Server(_config(create_app(settings), settings.serving_host, settings.serving_port,
                           http=_http(settings), loop=settings.serving_loop)).run()


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port, http=CoalescingHttpToolsProtocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="pulse-serving", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the serving app did not start (see the log)")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        sock.close()
