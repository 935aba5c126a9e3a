"""Running the app: ``pulse serve`` (uvicorn in the foreground) and a background server for tests and benches."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from pulse.settings import Settings

__all__ = ["run", "running"]


def _config(app: FastAPI | str, host: str, port: int, **extra: object) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                          timeout_graceful_shutdown=5, **extra)  # type: ignore[arg-type]


def run(settings: Settings) -> None:
    """Serve in the foreground until interrupted (``serving_workers`` processes via the factory)."""
    if settings.serving_workers > 1:
        # Workers are separate processes: each builds its app from the environment (PULSE_*).
        os.environ.update(_as_env(settings))
        uvicorn.run("serving.app:create_app_from_env", factory=True, host=settings.serving_host,
                    port=settings.serving_port, workers=settings.serving_workers, log_level="info",
                    access_log=False)
        return
    from serving.app import create_app

    uvicorn.Server(_config(create_app(settings), settings.serving_host, settings.serving_port)).run()


def _as_env(settings: Settings) -> dict[str, str]:
    """``PULSE_*`` variables that rebuild ``settings`` in another process."""
    env = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is not None:
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            env[f"PULSE_{name.upper()}"] = text
    return env


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1", timeout_s: float = 30.0) -> Iterator[str]:
    """Serve ``app`` on a free loopback port in a background thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(_config(app, host, port))
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
