"""Commands that need Kafka or Redis and cannot reach it: one line naming the address and the setting.

The real CLI runs as a subprocess against a closed port (nothing listens on it); Kafka is the
test session's real broker where only Redis is meant to be missing. No command may print a
traceback or hang.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import REPO_ROOT
from infra.local.process import free_port

#: Every command that needs the services before it does anything (and its exit code when it cannot).
COMMANDS = {
    "produce": (["produce", "synthetic", "--limit", "10"], 1),
    "lag": (["lag"], 2),  # pulse lag: 2 = Kafka or Redis could not be read
    "exporter": (["exporter", "--port", "0"], 1),
    "job run": (["job", "run"], 1),
    "job submit": (["job", "submit"], 1),
}
KAFKA_AND_REDIS = ["lag", "exporter", "job run", "job submit"]


def run_pulse(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulse", *args], cwd=REPO_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )


def closed_address() -> str:
    return f"127.0.0.1:{free_port()}"  # free a moment ago: nothing listens there


@pytest.fixture
def base_env(tmp_path: Path) -> dict[str, str]:
    return {"PULSE_HOME": str(tmp_path), "PULSE_FLINK_REST_PORT": str(free_port())}


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_unreachable_kafka_is_one_line_naming_address_and_setting(command: str, base_env: dict[str, str]) -> None:
    args, code = COMMANDS[command]
    kafka = closed_address()
    env = {**base_env, "PULSE_KAFKA_BOOTSTRAP": kafka, "PULSE_REDIS_URL": f"redis://{closed_address()}/0"}
    started = time.monotonic()
    result = run_pulse(env, *args)
    line = assert_one_error_line(result, code, f"cannot reach Kafka at {kafka}", "PULSE_KAFKA_BOOTSTRAP")
    assert "pulse up" not in line  # not the address local services listen on
    print(f"\n{command}: {line} (exit {result.returncode}, {time.monotonic() - started:.1f} s)")


@pytest.mark.parametrize("command", KAFKA_AND_REDIS)
def test_unreachable_redis_is_one_line_naming_address_and_setting(
    command: str, base_env: dict[str, str], kafka_bootstrap: str
) -> None:
    args, code = COMMANDS[command]
    redis_url = f"redis://{closed_address()}/0"
    env = {**base_env, "PULSE_KAFKA_BOOTSTRAP": kafka_bootstrap, "PULSE_REDIS_URL": redis_url}
    result = run_pulse(env, *args)
    line = assert_one_error_line(result, code, f"cannot reach Redis at {redis_url}", "PULSE_REDIS_URL")
    print(f"\n{command}: {line} (exit {result.returncode})")


def test_the_local_default_address_points_to_pulse_up(base_env: dict[str, str]) -> None:
    port = free_port()
    env = {**base_env, "PULSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}", "PULSE_KAFKA_PORT": str(port)}
    result = run_pulse(env, "produce", "synthetic", "--limit", "10")
    line = assert_one_error_line(result, 1, f"127.0.0.1:{port}", "PULSE_KAFKA_BOOTSTRAP", "'pulse up'")
    print(f"\n{line}")


def test_a_broker_that_never_answers_does_not_hang(base_env: dict[str, str]) -> None:
    # A loopback listener that accepts connections and says nothing: the metadata request must time
    # out, quickly. (Only loopback addresses: tests never send traffic anywhere else.)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        env = {**base_env, "PULSE_KAFKA_BOOTSTRAP": address}
        started = time.monotonic()
        result = run_pulse(env, "produce", "synthetic", "--limit", "10", timeout_s=30)
        elapsed = time.monotonic() - started
    assert_one_error_line(result, 1, address, "PULSE_KAFKA_BOOTSTRAP")
    assert elapsed < 20, elapsed


def test_serve_starts_anyway_with_one_warning_line_per_missing_service(base_env: dict[str, str]) -> None:
    kafka, redis_url = closed_address(), f"redis://{closed_address()}/0"
    env = {**os.environ, **base_env, "PULSE_KAFKA_BOOTSTRAP": kafka, "PULSE_REDIS_URL": redis_url}
    serve = subprocess.Popen(
        [sys.executable, "-m", "pulse", "serve", "--port", "0"], cwd=REPO_ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert serve.stderr is not None
        first = [serve.stderr.readline().strip() for _ in range(2)]
        assert serve.poll() is None, "serving must keep running without Kafka and Redis"
    finally:
        serve.terminate()
        rest = serve.communicate(timeout=30)[1]
    assert "Traceback" not in rest
    assert first[0].startswith("warning: cannot reach Kafka") and kafka in first[0], first
    assert "PULSE_KAFKA_BOOTSTRAP" in first[0]
    assert first[1].startswith("warning: cannot reach Redis") and redis_url in first[1], first
    assert "PULSE_REDIS_URL" in first[1]
