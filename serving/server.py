"""Running the app: ``pulse serve`` (uvicorn in the foreground) and a background server for tests and benches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from config import Settings
from serving.hot_routes import HotRoutesProtocol

__all__ = ["CoalescingHttpToolsProtocol", "reuse_port_socket", "run", "running", "supervise", "worker_count",
           "worker_cpus"]

log = logging.getLogger(__name__)


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

    def is_closing(self) -> bool:  # asked after every response: not through __getattr__
        return self._transport.is_closing()

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

    # Keep-alive: uvicorn arms a timer after every response and cancels it when the next request's
    # bytes arrive (~4 us of a request's CPU under uvloop). Here one timer per connection is armed
    # while it is idle and, when it fires, closes the connection only if it has been idle for the
    # whole timeout since its last response (else it is armed again for the rest).
    _idle_since: float | None = None

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # bytes arrived: not idle (the timer, if armed, finds that out)

    def on_response_complete(self) -> None:  # noqa: D102 - uvicorn's, with the timer above
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        if self._idle_since is None:
            return  # a request is under way: its response arms the timer again
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None


def _http(settings: Settings) -> type[asyncio.Protocol] | str:
    return CoalescingHttpToolsProtocol if settings.serving_http == "httptools" else settings.serving_http


def _config(app: FastAPI | str, host: str, port: int, **extra: Any) -> uvicorn.Config:
    extra.setdefault("log_level", "warning")
    return uvicorn.Config(app, host=host, port=port, access_log=False, timeout_graceful_shutdown=5, **extra)


def worker_count(settings: Settings) -> int:
    """``serving_workers``, else one per CPU core this process may run on."""
    return settings.serving_workers or len(os.sched_getaffinity(0)) or 1


def worker_cpus(pin: bool | None, workers: int, usable: Sequence[int]) -> list[int | None]:
    """The CPU each worker is pinned to (``None``: not pinned); ``pin`` unset pins one worker per usable CPU.

    Pinned, a worker's caches stay on its core: 2 workers on 2 cores, paced decisions cost a median
    ~18 us less server CPU each in alternated pairs (ADR 0004); a worker then cannot move off a core
    others keep busy.

    >>> worker_cpus(None, 2, [0, 1]), worker_cpus(None, 3, [0, 1]), worker_cpus(None, 1, [0])
    ([0, 1], [None, None, None], [None])
    >>> worker_cpus(True, 3, [2, 5]), worker_cpus(False, 2, [0, 1])
    ([2, 5, 2], [None, None])
    """
    cpus = sorted(usable)
    if pin is False or not cpus or (pin is None and (workers == 1 or workers != len(cpus))):
        return [None] * workers
    return [cpus[index % len(cpus)] for index in range(workers)]


def run(settings: Settings) -> None:
    """Serve in the foreground until interrupted (:func:`worker_count` processes sharing the port)."""
    workers = worker_count(settings)
    if workers > 1:
        # Workers are separate processes: each builds its app from the environment (PULSE_*).
        os.environ.update(settings.to_env())
        supervise(settings, workers)
        return
    from serving.app import create_app

    uvicorn.Server(_config(create_app(settings), settings.serving_host, settings.serving_port,
                           http=_http(settings), loop=settings.serving_loop)).run()


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` with ``SO_REUSEPORT``: one per worker, the kernel spreads connections.

    uvicorn's own workers accept on one socket the supervisor bound: a burst of connections (a load
    client's, a proxy's pool) mostly lands on whichever worker woke first (its loop accepts a whole
    backlog at once), so two workers served ~1.4x one (bench/serving.py). With a socket each, the
    kernel hashes every connection to one of them.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int, cpu: int | None) -> None:
    """A worker: the app from ``PULSE_*``, served on its own ``SO_REUSEPORT`` socket, on ``cpu`` when given."""
    from serving.app import create_app

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    settings = Settings.model_validate({})
    sock = reuse_port_socket(host, port)
    uvicorn.Server(_config(create_app(settings), host, port, http=_http(settings), loop=settings.serving_loop,
                           log_level="info")).run(sockets=[sock])


def supervise(settings: Settings, workers: int) -> None:
    """Run ``workers`` worker processes until SIGINT/SIGTERM; a worker that dies is started again.

    The port is checked (bound with ``SO_REUSEPORT``, not listening) before any worker starts; a
    worker that dies within its first 10 s stops the whole server (it would not start either).
    """
    host, port = settings.serving_host, settings.serving_port
    guard = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    guard.bind((host, port))  # fails here if another server holds the port; never listens, gets no connections
    port = guard.getsockname()[1]  # port 0: the one the kernel chose, for every worker
    context = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}

    cpus = worker_cpus(settings.serving_pin_workers, workers, list(os.sched_getaffinity(0)))

    def start(index: int) -> tuple[Any, float]:
        process = context.Process(target=_worker, args=(host, port, cpus[index]), name=f"pulse-serving-worker-{index}")
        process.start()
        return process, time.monotonic()

    procs = [start(index) for index in range(workers)]
    pinned = f", on CPUs {', '.join(str(cpu) for cpu in cpus)}" if None not in cpus else ""
    print(f"serving on http://{host}:{port} with {workers} worker processes (SO_REUSEPORT{pinned})",
          file=sys.stderr, flush=True)
    failed = False
    try:
        while not stopping.wait(0.5):
            for i, (process, started) in enumerate(procs):
                if process.is_alive():
                    continue
                if time.monotonic() - started < 10:
                    log.error("worker %d exited at start (code %s): stopping", process.pid, process.exitcode)
                    failed = True
                    stopping.set()
                    break
                log.warning("worker %d exited (code %s): starting another", process.pid, process.exitcode)
                procs[i] = start(i)
    finally:
        for process, _ in procs:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn's graceful shutdown
        for process, _ in procs:
            process.join(timeout=15)
            if process.is_alive():
                process.kill()
        guard.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise SystemExit(3)


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", timeout_s: float = 30.0, **config: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread; yields the base URL.

    ``config``: more of ``uvicorn.Config``'s settings (e.g. ``timeout_keep_alive``).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port, http=CoalescingHttpToolsProtocol, **config))
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
