"""``pulse serve --workers 2``: two worker processes answer on one port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from config import REPO_ROOT, Settings
from infra.local.process import free_port
from serving.server import worker_cpus


def _workers(pid: int) -> list[int]:
    """Child processes of ``pid`` that are uvicorn workers (multiprocessing spawns, not its resource tracker)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    found = []
    for child in (int(p) for p in out.split()):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            continue
    return found


def test_two_workers_share_the_port(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PULSE_")}, **settings.to_env(),
           "PULSE_SERVING_PORT": str(port)}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "pulse", "serve", "--workers", "2"], cwd=REPO_ROOT, env=env,
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"not two healthy workers in 60 s:\n{log.read_text()}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200 and len(_workers(serve.pid)) == 2:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        with ThreadPoolExecutor(8) as pool:  # fresh connections, spread by the kernel over the workers
            codes = list(pool.map(lambda _: httpx.get(f"{base}/readyz", timeout=10).status_code, range(64)))
        assert codes == [200] * 64
        workers = _workers(serve.pid)
        assert len(workers) == 2
        # Unset PULSE_SERVING_PIN_WORKERS: one worker per usable CPU is pinned, each to its own CPU.
        usable = sorted(os.sched_getaffinity(0))
        expected = [set(usable) if cpu is None else {cpu} for cpu in worker_cpus(None, 2, usable)]
        assert sorted(map(sorted, (os.sched_getaffinity(pid) for pid in workers))) == sorted(map(sorted, expected))
        assert ("on CPUs" in log.read_text()) == (len(usable) == 2)
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(timeout=30)
