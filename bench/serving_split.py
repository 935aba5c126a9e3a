"""Where the 2 cores go during an unpaced run of bench/serving.py: server, load client, Redis, anything else.

On a small machine the load client and Redis take their CPU from the same cores as the server, so
a throughput figure (and the 2-workers-vs-1 ratio) depends on what they cost per request, and on
any other process that ran meanwhile. :class:`CpuSplit` snapshots all of it from ``/proc`` (and
Redis's ``INFO cpu``) before and after a run; :func:`connections_per_worker` says how the kernel
spread the client's connections over the server's workers (``SO_REUSEPORT`` hashes each
connection to one worker's socket: 16 connections often land 10 / 6 or 11 / 5).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CpuSplit", "connections_per_worker", "machine_cpu_s", "process_cpu_s", "server_pids"]

_TICK = os.sysconf("SC_CLK_TCK")


def server_pids(pid: int) -> list[int]:
    """``pid`` and its children (a supervisor's workers)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid, *(int(p) for p in found)]


def process_cpu_s(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of ``pid`` (all its threads) so far; zeros once it is gone."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) / _TICK, int(fields[12]) / _TICK
    return 0.0, 0.0


def machine_cpu_s() -> float:
    """CPU seconds every core of the machine spent busy so far (``/proc/stat``: all but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / _TICK  # guest time is already in user


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class _Snapshot:
    server: dict[int, tuple[float, float]]
    client: float
    redis: float
    bench: float
    machine: float


class CpuSplit:
    """CPU of the server (each process, user and system), the load client, Redis and the rest, over a run.

    The load client is a child of this process that has exited by :meth:`stop` (its CPU comes from
    ``RUSAGE_CHILDREN``); ``redis_cpu_s`` reads Redis's own counter. "Others" is what the whole
    machine was busy for minus all of these and this process: other sessions, services, the kernel's
    own threads.
    """

    def __init__(self, server_pid: int, redis_cpu_s: Callable[[], float]) -> None:
        self.pids = server_pids(server_pid)
        self._redis_cpu_s = redis_cpu_s
        self._before = self._snapshot()
        self._after: _Snapshot | None = None

    def _snapshot(self) -> _Snapshot:
        return _Snapshot({pid: process_cpu_s(pid) for pid in self.pids}, _children_cpu_s(), self._redis_cpu_s(),
                         _self_cpu_s(), machine_cpu_s())

    def stop(self) -> None:
        """The end of the run (after the load client exited)."""
        self._after = self._snapshot()

    def server_s(self) -> float:
        """The server's CPU seconds over the run (every process)."""
        assert self._after is not None
        return sum(sum(self._after.server[p]) - sum(self._before.server[p]) for p in self.pids)

    def describe(self, requests: int, elapsed_s: float) -> str:
        """Per request: each busy server process (user + system), the client, Redis; others as % of the cores."""
        assert self._after is not None
        before, after, n = self._before, self._after, max(requests, 1)
        parts = []
        for pid in self.pids:
            user = after.server[pid][0] - before.server[pid][0]
            system = after.server[pid][1] - before.server[pid][1]
            if user + system > 0.02 * elapsed_s:  # the supervisor and idle helpers are left out
                parts.append(f"{(user + system) / n * 1e6:.0f} ({user / n * 1e6:.0f}+{system / n * 1e6:.0f})")
        client = after.client - before.client
        redis = after.redis - before.redis
        bench = after.bench - before.bench
        others = (after.machine - before.machine) - self.server_s() - client - redis - bench
        cores = len(os.sched_getaffinity(0))
        return (f"CPU us/req: server {' + '.join(parts) or '0'} (user+sys), client {client / n * 1e6:.1f}, "
                f"Redis {redis / n * 1e6:.1f}; others {max(others, 0.0) / elapsed_s / cores * 100:.0f}% of "
                f"{cores} cores")


def connections_per_worker(port: int) -> list[int]:
    """Established connections to ``port`` per server process, most first (``ss``; empty if it is missing)."""
    try:
        out = subprocess.run(["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)
