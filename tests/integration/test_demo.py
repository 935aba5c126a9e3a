"""`pulse demo` stops its job on SIGTERM and SIGHUP, and `pulse down` stops the job of a killed demo;
while it runs, the web console in a real headless Chromium follows its live job.

The demo runs as a user runs it (`python -m pulse demo`) on a private home and free ports; it
starts its own Kafka and Redis there. "Running" means the job has learned events this run (the
model's count in Redis grows). Afterwards no process of ours may be left: none whose command line
carries the home, none in the job's process group.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as redis_lib
from pydantic import SecretStr

from config import REPO_ROOT, Settings
from infra.local.process import free_port
from schemas.redis_keys import Envelope, RedisKeys, UserKind
from serving import create_app
from serving.server import running
from serving.sync_reads import user_part
from tests.integration.browser import dump_dom, screenshot
from tests.integration.test_cli_services import our_processes, pulse

pytestmark = pytest.mark.flink_job

START_TIMEOUT_S = 300
SERVICES = ("kafka.Kafka", "redis-server")  # the local services' processes (the demo leaves them up)


@pytest.fixture(scope="module")
def demo_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path_factory.mktemp("demo-home")
    (home / "jars").symlink_to(REPO_ROOT / ".local" / "jars", target_is_directory=True)
    env = {
        "PULSE_HOME": str(home),
        "PULSE_KAFKA_PORT": str(free_port()),
        "PULSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "PULSE_REDIS_PORT": str(free_port()),
        "PULSE_METRICS_PORT": "0",  # no Prometheus reporter: its port may be taken by another run
        "PULSE_CHECKPOINT_INTERVAL_MS": "2000",
    }
    try:
        yield home, env
    finally:
        down = pulse(home, env, "down")
        assert down.returncode == 0, down.stderr
        assert our_processes(home) == []


def learned(env: dict[str, str]) -> int:
    client = redis_lib.Redis.from_url(f"redis://127.0.0.1:{env['PULSE_REDIS_PORT']}/0", socket_timeout=2)
    try:
        model = Envelope.from_fields_or_none(client.hgetall(RedisKeys("pulse").model("mf")))
    except redis_lib.ConnectionError:
        return -1  # the demo has not started Redis yet
    finally:
        client.close()
    return int(model.payload["events_learned"]) if model else 0


def start_demo(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start `pulse demo`; return it and the pid of its job once the job learns events."""
    before = max(learned(env), 0)
    log = (home / "demo-output.log").open("ab")
    demo = subprocess.Popen([sys.executable, "-m", "pulse", "demo", "--rate", "200", "--trace",
                             str(home / "demo-trace.csv")], cwd=REPO_ROOT,
                            env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while learned(env) <= before:
        assert demo.poll() is None, f"the demo exited {demo.returncode}:\n{tail(home)}"
        assert time.monotonic() < deadline, f"the job learned nothing in {START_TIMEOUT_S}s:\n{tail(home)}"
        time.sleep(1)
    job_pid = int((home / "run" / "demo-job.pid").read_text())
    assert group_members(job_pid), "the job's process group is empty"
    return demo, job_pid


def tail(home: Path) -> str:
    logs = [home / "demo-output.log", home / "logs" / "demo-job.log"]
    return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-20:])
                     for p in logs if p.exists())


def group_members(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()
            if line.split(None, 1)[0] == str(pgid) and not line.split()[1].startswith("Z")]


def job_processes(home: Path, job_pid: int) -> list[str]:
    """Processes of the job: in its group, or carrying the home and not one of the local services."""
    carrying = [line for line in our_processes(home) if not any(s in line for s in SERVICES)]
    return carrying + group_members(job_pid)


def wait_gone(home: Path, job_pid: int, timeout_s: float = 90) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while (left := job_processes(home, job_pid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def a_user_with_scores(client: redis_lib.Redis, keys: RedisKeys) -> str:
    """A demo user whose value in Redis holds a top-k."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for key in client.scan_iter(match=f"{keys.prefix}:user:*", count=1000):
            user = key.decode().split("{", 1)[1].rsplit("}", 1)[0]
            if user_part(client, keys, user, UserKind.RECS):
                return user
        time.sleep(1)
    raise AssertionError("no demo user with scores in Redis within 60 s")


def check_the_console_follows_the_live_job(home: Path, env: dict[str, str]) -> None:
    """Two screenshots 3 s apart differ; the DOM shows the user's top-k and the job's count from Redis."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{env['PULSE_REDIS_PORT']}/0",
                        kafka_bootstrap=f"127.0.0.1:{env['PULSE_KAFKA_PORT']}",
                        serving_api_keys=SecretStr("read:rk-demo"))
    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)
    user = a_user_with_scores(client, keys)
    with running(create_app(settings), timeout_s=60) as url:
        page = f"{url}/console#key=rk-demo&user={user}"
        first = screenshot(page, "console-demo-1.png", budget_ms=4000, size="1100,1100").read_bytes()
        time.sleep(3)
        second = screenshot(page, "console-demo-2.png", budget_ms=4000, size="1100,1100").read_bytes()
        assert second != first, "two screenshots of the console 3 s apart are identical"
        before, recs_before = learned(env), user_part(client, keys, user, UserKind.RECS)
        dom = dump_dom(page, budget_ms=4000)
        after, recs_after = learned(env), user_part(client, keys, user, UserKind.RECS)
    assert recs_before is not None and recs_after is not None and 'data-state="live"' in dom, dom[-3000:]
    shown = re.findall(r'<tr data-item="([^"]+)"', dom)
    in_redis = {item for recs in (recs_before, recs_after) for item, _ in recs.payload["items"]}
    assert shown and set(shown) <= in_redis, (shown, dom[-3000:])  # the top-k the page read from Redis
    shown_learned = int(re.search(r'id="events-learned">(\d+)<', dom).group(1))  # type: ignore[union-attr]
    assert before <= shown_learned <= after, (before, shown_learned, after)
    print(f"\nconsole on the demo's job: user {user}, top-k {shown[:3]}..., learned {shown_learned:,} "
          f"(Redis {before:,}..{after:,})")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_the_demo_stops_its_job(demo_env: tuple[Path, dict[str, str]], sig: signal.Signals) -> None:
    home, env = demo_env
    demo, job_pid = start_demo(home, env)
    if sig is signal.SIGTERM:  # while it runs (one demo start serves both checks: CI time)
        check_the_console_follows_the_live_job(home, env)
    print(f"\njob running (pid {job_pid}): {len(job_processes(home, job_pid))} processes; sending {sig.name}")
    demo.send_signal(sig)
    try:
        code = demo.wait(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGKILL)
        raise AssertionError(f"the demo did not exit after {sig.name}:\n{tail(home)}") from None
    left = wait_gone(home, job_pid)
    assert left == [], f"left after {sig.name}: {left}"
    assert code == 0, tail(home)
    assert "demo stopped" in (home / "demo-output.log").read_text()
    assert not (home / "run" / "demo-job.pid").exists()
    with (home / "demo-trace.csv").open(newline="") as trace:  # --trace: every look of the live view
        header, *looks = list(csv.reader(trace))
    assert header == ["seconds", "produced_per_s", "learned_per_s", "newest_score_ms"] and len(looks) >= 2
    assert all(float(look[0]) >= 0 and float(look[1]) >= 0 for look in looks)
    assert any(look[3] for look in looks), "no look saw a score (the job learned before the signal)"
    print(f"demo exited {code}; no process of the job is left; {len(looks)} looks traced")


def test_down_stops_the_job_of_a_killed_demo(demo_env: tuple[Path, dict[str, str]]) -> None:
    home, env = demo_env
    demo, job_pid = start_demo(home, env)
    os.killpg(demo.pid, signal.SIGKILL)  # no chance to clean up
    demo.wait(timeout=30)
    time.sleep(2)
    assert job_processes(home, job_pid), "the job must outlive a SIGKILLed demo (its own process group)"
    down = pulse(home, env, "down")
    assert down.returncode == 0, down.stderr
    assert "demo-job" in down.stdout and "kafka" in down.stdout and "redis" in down.stdout, down.stdout
    assert wait_gone(home, job_pid, timeout_s=10) == []
    assert our_processes(home) == []
    print(f"\n{down.stdout.strip()}; no process of ours is left")
