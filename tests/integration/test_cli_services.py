"""`pulse up && pulse status && pulse up && pulse down` on a private home and free ports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from config import REPO_ROOT
from infra.local.process import free_port

pytestmark = pytest.mark.flink_job


def pulse(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pulse", *args], cwd=REPO_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=180, check=False,
    )


def our_processes(home: Path) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if str(home) in line]


@pytest.fixture
def service_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "jars").symlink_to(REPO_ROOT / ".local" / "jars", target_is_directory=True)
    return {
        "PULSE_HOME": str(tmp_path),
        "PULSE_KAFKA_PORT": str(free_port()),
        "PULSE_KAFKA_CONTROLLER_PORT": str(free_port()),
        "PULSE_REDIS_PORT": str(free_port()),
        "PULSE_KAFKA_BOOTSTRAP": "",  # `up` targets the local broker it starts
    }


def test_up_status_up_down_leaves_nothing_behind(tmp_path: Path, service_env: dict[str, str]) -> None:
    env = {k: v for k, v in service_env.items() if v}
    try:
        first = pulse(tmp_path, env, "up")
        assert first.returncode == 0, first.stderr
        assert healthy_services(first.stdout) >= {"kafka", "redis"}

        status = pulse(tmp_path, env, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = {row["service"]: row for row in json.loads(status.stdout)}
        assert rows["kafka"]["health"] == rows["redis"]["health"] == "healthy"
        assert rows["kafka"]["address"] == f"127.0.0.1:{env['PULSE_KAFKA_PORT']}"
        pids = {rows["kafka"]["pid"], rows["redis"]["pid"]}

        again = pulse(tmp_path, env, "up")  # idempotent: same processes
        assert again.returncode == 0, again.stderr
        rows_again = {row["service"]: row for row in json.loads(pulse(tmp_path, env, "status", "--json").stdout)}
        assert {rows_again["kafka"]["pid"], rows_again["redis"]["pid"]} == pids
    finally:
        down = pulse(tmp_path, env, "down")
    assert down.returncode == 0, down.stderr
    assert "kafka" in down.stdout and "redis" in down.stdout
    assert our_processes(tmp_path) == []
    stopped = pulse(tmp_path, env, "status")
    assert stopped.returncode == 1 and "stopped" in stopped.stdout


def healthy_services(up_output: str) -> set[str]:
    """Services `pulse up` reports healthy (lines "<service> healthy <address> pid N")."""
    return {line.split()[0] for line in up_output.splitlines() if line.split()[1:2] == ["healthy"]}


def test_up_flink_starts_a_cluster_that_takes_jobs_and_down_stops_it(
    tmp_path: Path, service_env: dict[str, str]
) -> None:
    env = {k: v for k, v in service_env.items() if v} | {
        "PULSE_FLINK_REST_PORT": str(free_port()), "PULSE_FLINK_RPC_PORT": str(free_port()),
        "PULSE_METRICS_PORT": str(free_port()),
    }
    try:
        up = pulse(tmp_path, env, "up", "--flink")
        assert up.returncode == 0, up.stderr
        assert healthy_services(up.stdout) == {"kafka", "redis", "flink-jm", "flink-tm1", "flink-tm2"}
        overview = json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{env['PULSE_FLINK_REST_PORT']}/overview", timeout=5).read())
        assert (overview["taskmanagers"], overview["slots-total"]) == (2, 4)
        listed = pulse(tmp_path, env, "job", "list", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
    finally:
        down = pulse(tmp_path, env, "down")
    assert down.returncode == 0, down.stderr
    assert {"flink-jobmanager", "flink-taskmanager-1", "flink-taskmanager-2"} <= set(
        down.stdout.removeprefix("stopped: ").strip().split(", "))
    assert our_processes(tmp_path) == []
    gone = pulse(tmp_path, env, "job", "list")
    assert gone.returncode == 1 and gone.stderr.count("error:") == 1, gone.stderr


def test_a_taken_port_gives_one_line_naming_it(tmp_path: Path, service_env: dict[str, str]) -> None:
    env = {k: v for k, v in service_env.items() if v}
    port = int(env["PULSE_REDIS_PORT"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = pulse(tmp_path, env, "up")
    pulse(tmp_path, env, "down")
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, result.stderr
    assert f"port {port}" in error_lines[0]
    assert our_processes(tmp_path) == []
