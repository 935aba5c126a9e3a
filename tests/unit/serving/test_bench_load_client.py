"""bench/serving.py's load clients (bench/pacedload) and the unpaced CPU split, against a tiny local server.

The client must do what wrk did: every answer read in full, its status checked, each connection
sending its own share of the requests in turn, a server that closes a connection an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.serving import go_paced_load, go_unpaced_load, http_requests
from bench.serving_split import CpuSplit, connections_per_worker

# Skipped only outside CI: under CI a missing go fails these tests (go is on CI's machines).
pytestmark = pytest.mark.skipif(shutil.which("go") is None and not os.environ.get("CI"),
                                reason="bench/pacedload needs go")


class _Server:
    """Keep-alive HTTP/1.1 on loopback: 200 with a 3,000-byte body (several reads), 404 for ``/missing``;
    ``close_after`` answers, then it closes the connection."""

    def __init__(self, close_after: int | None = None, record_policies: bool = False) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.close_after = close_after
        self.paths: Counter[str] = Counter()
        self.record_policies = record_policies
        self.policies: set[int] = set()  # with record_policies: the load client's scheduling policies while served
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        data, answered = b"", 0
        with conn:
            while self.close_after is None or answered < self.close_after:
                while b"\r\n\r\n" not in data:
                    try:
                        chunk = conn.recv(65536)
                    except OSError:  # the client gave up on the connection
                        return
                    if not chunk:
                        return
                    data += chunk
                head, data = data.split(b"\r\n\r\n", 1)
                path = head.split(b" ")[1].decode()
                with self.lock:
                    self.paths[path] += 1
                    if self.record_policies:
                        self.policies.update(_client_policies())
                body = b"x" * 3000 if path != "/missing" else b"{}"
                status = b"200 OK" if path != "/missing" else b"404 Not Found"
                conn.sendall(b"HTTP/1.1 " + status + b"\r\ncontent-type: text/plain\r\ncontent-length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                answered += 1


def _client_policies() -> set[int]:
    """The scheduling policies of this process's ``pacedload`` children (other children and threads come and go)."""
    found = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
            for pid in children:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "pacedload":
                    found.add(os.sched_getscheduler(int(pid)))
        except OSError:  # a thread or a child that ended meanwhile
            continue
    return found


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server()
    yield running
    running.listener.close()


def test_every_answer_is_read_and_non_2xx_counted(server: _Server, tmp_path: Path) -> None:
    paths = ["/a", "/b", "/c", "/missing"]
    (elapsed, latencies, errors, _), spread = go_unpaced_load(
        server.port, http_requests("GET", paths, None), concurrency=4, seconds=0.5, home=tmp_path)
    assert elapsed > 0
    assert len(latencies) == sum(server.paths.values())  # every answer the server wrote was read
    assert len(latencies) >= 8
    # connection c sends requests c, c+4, ... in turn: here each connection one path, /missing on one of 4
    assert set(server.paths) == set(paths)
    assert len(errors) == server.paths["/missing"] and set(errors) == {404}
    assert sum(spread) == 4  # the 4 connections, all to this (one) process


def test_a_connection_the_server_closes_fails_the_run(tmp_path: Path) -> None:
    closing = _Server(close_after=3)
    try:
        with pytest.raises(RuntimeError, match=r"pacedload -rate 0 failed: .*(closed a connection|reset by peer)"):
            go_unpaced_load(closing.port, http_requests("GET", ["/a"], None), concurrency=2, seconds=5.0,
                            home=tmp_path, batch=False)
    finally:
        closing.listener.close()


def test_the_cpu_split_names_each_part(server: _Server, tmp_path: Path) -> None:
    split = CpuSplit(os.getpid(), lambda: 0.0)
    (_, latencies, _, _), _ = go_unpaced_load(server.port, http_requests("GET", ["/a"], None), concurrency=2,
                                              seconds=0.3, home=tmp_path)
    split.stop()
    text = split.describe(len(latencies), 0.3)
    assert text.startswith("CPU us/req: server ") and "client " in text and "Redis 0.0" in text
    assert "% of " in text
    assert connections_per_worker(server.port) == []  # the run is over: no connection left


@pytest.mark.parametrize(("batch", "policy"), [(True, os.SCHED_BATCH), (False, os.SCHED_OTHER)])
def test_the_paced_client_runs_under_the_policy_asked_for(tmp_path: Path, batch: bool, policy: int) -> None:
    running = _Server(record_policies=True)
    try:
        _, latencies, errors, _ = go_paced_load(running.port, http_requests("GET", ["/a"], None), total=20,
                                                concurrency=2, rate=200, max_s=10, home=tmp_path, batch=batch)
    finally:
        running.listener.close()
    assert len(latencies) == 20 and not errors
    assert running.policies == {policy}
