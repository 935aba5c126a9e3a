"""The floor under bench/serving.py's decisions: uvicorn as ``pulse serve`` runs it, answering a constant body.

A bare ASGI app on the same server stack (uvloop, httptools, the one-write-per-response protocol of
``serving/server.py``) answers every ``POST /v1/decisions`` with a constant decision-sized JSON body.
The same paced load as ``bench/serving.py`` (Go client, 2,000 rps, 16 connections) then shows the
server CPU per request that the HTTP server, the event loop and the kernel cost before any of
Pulse's code runs; the decisions line of ``bench/serving.py`` in the same hour is that plus Pulse.

    .venv/bin/python bench/serving_floor.py [--rate 2000] [--requests 20000]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.local.process import free_port

_SPEC = importlib.util.spec_from_file_location("serving_bench", Path(__file__).resolve().parent / "serving.py")
assert _SPEC is not None and _SPEC.loader is not None
bench = importlib.util.module_from_spec(_SPEC)  # bench/serving.py: its load client and report
_SPEC.loader.exec_module(bench)

APP = """
import sys
import uvicorn
sys.path.insert(0, {root!r})
from serving.server import CoalescingHttpToolsProtocol
BODY = (b'{{"request_id":"0123456789abcdef0123456789abcdef","arm":"a3","propensity":0.1234,"policy":"ts",'
        b'"experiment":"bandit-v1","variant":"treatment","scope":"global","model_version":"v1"}}')
HEADERS = [(b"content-length", str(len(BODY)).encode()), (b"content-type", b"application/json")]
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
    await send({{"type": "http.response.body", "body": BODY}})
uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False,
                              http=CoalescingHttpToolsProtocol, loop="uvloop")).run()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    if not shutil.which("go"):
        parser.error("the paced client is bench/pacedload (Go): go is not installed")
    port = free_port()
    root = str(Path(__file__).resolve().parent.parent)
    server = subprocess.Popen([sys.executable, "-c", APP.format(root=root, port=port)], start_new_session=True)
    home = Path(tempfile.mkdtemp(prefix="pulse-floor-"))
    try:
        deadline = time.monotonic() + 30
        while True:  # until the server accepts connections
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the floor server did not start") from None
                time.sleep(0.1)
        bodies = [orjson.dumps({"user_id": f"u{i}", "decision_point": "home"}) for i in range(4096)]
        requests = bench.http_requests("POST", ["/v1/decisions"] * 4096, bodies)
        bench.run_load(port, requests, 2000, args.concurrency, 0.0, 10.0)  # warm-up
        cpu = bench.cpu_seconds(server.pid)
        result = bench.go_paced_load(port, requests, args.requests, args.concurrency, args.rate, 20.0, home)
        print(bench.report(f"floor (bare ASGI app) paced @ {args.rate:,.0f} rps (go, c={args.concurrency})",
                           bench.cpu_seconds(server.pid) - cpu, *result))
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
