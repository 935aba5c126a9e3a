"""Load test of the serving shim: recommendations and decisions, next to redis-benchmark GET on the same Redis.

The server runs as its own process (``python -m pulse serve``); this script is the load client: a
small asyncio HTTP/1.1 keep-alive client (fixed concurrency, bounded in requests and seconds,
optionally paced to a target rate, latency measured from the scheduled send time so a slow server
cannot hide queueing). Redis: your own with --redis-url (keys under a unique prefix), else a
private redis-server on a free port. Kafka (impressions of decisions) from PULSE_KAFKA_BOOTSTRAP;
the decision response never waits for it.

    .venv/bin/python bench/serving.py                       # paced at 2,000 rps, then unpaced
    .venv/bin/python bench/serving.py --rate 0 --concurrency 32 --requests 50000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flink_jobs.redis_sink import RedisWriter
from infra.local.process import free_port
from infra.local.redis import RedisServer
from producers.topics import ensure_topics
from pulse.settings import Settings
from schemas.redis_keys import RedisKeys

T0 = 1_700_000_000_000


@contextlib.contextmanager
def redis_target(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    home = Path(tempfile.mkdtemp(prefix="pulse-bench-"))
    server = RedisServer(home, free_port())
    server.start(timeout_s=30)
    try:
        yield server.url
    finally:
        server.process.stop()
        shutil.rmtree(home, ignore_errors=True)


def seed(redis_url: str, prefix: str, users: int, items: int) -> None:
    keys = RedisKeys(prefix)
    rng = np.random.default_rng(0)
    batch: list[tuple[str, int, object]] = []
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        for u in range(users):
            scores = sorted(((f"i{i}", float(s)) for i, s in enumerate(rng.normal(3.5, 1, items))), key=lambda p: -p[1])
            batch.append((keys.recs(f"u{u}"), T0, {"items": [list(p) for p in scores[:50]], "global_mean": 3.5}))
            batch.append((keys.session(f"u{u}"), T0, {"open": True, "session_id": "s", "recent_items": ["i1", "i2"]}))
            if len(batch) >= 2000:
                writer.write_batch(batch)
                batch = []
        batch.append((keys.popularity("*"), T0, {"segment": "*", "items": [[f"i{i}", 100.0 - i] for i in range(100)],
                                                 "at_ms": T0, "half_life_ms": 86_400_000}))
        batch.append((keys.bandit("ts", "global"), T0, {
            "policy": "ts", "scope": "global", "stat_names": ["successes", "failures"],
            "arms": {f"a{i}": [float(10 + i), 90.0] for i in range(8)}, "hyperparameters": {}}))
        writer.write_batch(batch)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children (uvicorn workers), from /proc."""
    total = 0.0
    pids = [pid, *(int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                                                    text=True).stdout.split())]
    for one in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


@contextlib.contextmanager
def server_process(env: dict[str, str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-m", "pulse", "serve"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in 60 s")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _connection(port: int, requests: list[bytes], count: int, start: float, interval: float,
                      deadline: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for i in range(count):
            scheduled = start + i * interval if interval else time.perf_counter()
            if scheduled > deadline:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(requests[i % len(requests)])
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - scheduled)
            if head[9:10] != b"2":
                errors.append(int(head[9:12]))
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], total: int, concurrency: int, rate: float,
               max_s: float) -> tuple[float, list[float], list[int]]:
    latencies: list[float] = []
    errors: list[int] = []
    per_conn = total // concurrency
    interval = concurrency / rate if rate else 0.0
    start = time.perf_counter() + 0.05
    deadline = start + max_s
    tasks = [_connection(port, requests[c::concurrency] or requests, per_conn, start + c * interval / concurrency,
                         interval, deadline, latencies, errors) for c in range(concurrency)]
    began = time.perf_counter()
    await asyncio.gather(*tasks)
    return time.perf_counter() - began, latencies, errors


def http_requests(method: str, paths: list[str], bodies: list[bytes] | None) -> list[bytes]:
    out = []
    for i, path in enumerate(paths):
        body = bodies[i] if bodies else b""
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        out.append(head.encode() + b"\r\n" + body)
    return out


def report(name: str, cpu_s: float, elapsed: float, latencies: list[float], errors: list[int]) -> str:
    ms = np.array(latencies) * 1000
    return (f"{name:<34} {len(ms) / elapsed:>9,.0f} rps   p50 {np.percentile(ms, 50):7.2f} ms   "
            f"p99 {np.percentile(ms, 99):7.2f} ms   server CPU {cpu_s / len(ms) * 1e6:5.0f} us/req   "
            f"n={len(ms):,} errors={len(errors)}")


def redis_benchmark(redis_url: str, requests: int, concurrency: int) -> str:
    if not shutil.which("redis-benchmark"):
        return "redis-benchmark GET: not installed (apt-get install redis-tools)"
    host_port = redis_url.split("//", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, port = host_port.split(":")
    out = subprocess.run(["redis-benchmark", "-h", host, "-p", port, "-t", "get", "-n", str(requests),
                          "-c", str(concurrency), "--csv"], capture_output=True, text=True, check=True).stdout
    row = next(line for line in out.splitlines() if line.startswith('"GET"'))
    cells = [c.strip('"') for c in row.split(",")]
    return (f"{'redis-benchmark GET (c=' + str(concurrency) + ')':<34} {float(cells[1]):>9,.0f} rps   "
            f"p50 {float(cells[4]):6.2f} ms   p99 {float(cells[6]):6.2f} ms   n={requests:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=None, help="Use this Redis (unique key prefix) instead of a private one")
    parser.add_argument("--requests", type=int, default=20_000, help="Requests per scenario")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=2000.0, help="Paced scenarios' target rps (0 = unpaced only)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="Bound per scenario")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1, help="Server worker processes")
    args = parser.parse_args()

    settings = Settings()
    prefix = f"pulse-bench-{uuid.uuid4().hex[:8]}"
    topic = f"events-bench-{uuid.uuid4().hex[:8]}"
    with redis_target(args.redis_url) as redis_url:
        seed(redis_url, prefix, args.users, 200)
        with contextlib.suppress(Exception):  # impressions just queue if Kafka is not there
            ensure_topics(settings.model_copy(update={"topic_events": topic}), [topic], timeout_s=10)
        port = free_port()
        env = {**os.environ, "PULSE_REDIS_URL": redis_url, "PULSE_REDIS_PREFIX": prefix, "PULSE_TOPIC_EVENTS": topic,
               "PULSE_SERVING_PORT": str(port), "PULSE_SERVING_WORKERS": str(args.workers)}
        env.pop("PULSE_SERVING_API_KEYS", None)
        recs = http_requests("GET", [f"/v1/users/u{i % args.users}/recommendations?k=10" for i in range(4096)], None)
        bodies = [orjson.dumps({"user_id": f"u{i}", "decision_point": "home"}) for i in range(4096)]
        decisions = http_requests("POST", ["/v1/decisions"] * 4096, bodies)
        lines = []
        with server_process(env, port) as proc:
            for name, reqs in (("recommendations", recs), ("decisions", decisions)):
                asyncio.run(load(port, reqs, 2000, args.concurrency, 0.0, 10.0))  # warm-up
                scenarios = [(f"{name} @ {args.rate:,.0f} rps target", args.rate)] if args.rate else []
                for label, rate in [*scenarios, (f"{name} unpaced (c={args.concurrency})", 0.0)]:
                    cpu = cpu_seconds(proc.pid)
                    result = asyncio.run(load(port, reqs, args.requests, args.concurrency, rate, args.max_seconds))
                    lines.append(report(label, cpu_seconds(proc.pid) - cpu, *result))
        lines.append(redis_benchmark(redis_url, 100_000, args.concurrency))
    print(f"serving bench: {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), {args.workers} server "
          f"worker(s), loopback, one client process, {args.users:,} users x top-50")
    for line in lines:
        print("  " + line)


if __name__ == "__main__":
    main()
