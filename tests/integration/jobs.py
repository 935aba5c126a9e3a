"""Run `pulse job run` as its own process against the test services, as a user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from config import REPO_ROOT, Settings
from infra.local.process import wait_for_group


def job_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pulse", "job", "run", *args]


#: Set in this process by an in-process Flink run (test_flink_runtime): PYFLINK_GATEWAY_DISABLED
#: stops a child from starting its own JVM; FLINK_LOG_DIR would send the child's Flink logs
#: there instead of under its own home (where test_security looks for them).
_NOT_INHERITED = ("PYFLINK_GATEWAY_DISABLED", "FLINK_LOG_DIR")


def inherited_env() -> dict[str, str]:
    """This process's environment as a child job should inherit it."""
    return {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}


def start_job(
    settings: Settings, *args: str, log: Path, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen[Any]:
    """Start the job in the background (own process group, so it can be SIGKILLed whole)."""
    env = {**inherited_env(), **settings.to_env(), **(extra_env or {})}
    out = log.open("ab")
    return subprocess.Popen(job_command(*args), cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def run_bounded_job(settings: Settings, *args: str, log: Path, timeout_s: float = 300) -> None:
    """Run the job over what the events topic holds now, to completion; fail with its log tail."""
    proc = start_job(settings, "--bounded", "--restore", "none", *args, log=log)
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"job did not finish in {timeout_s}s:\n{tail(log)}") from None
    assert code == 0, f"job exited {code}:\n{tail(log)}"


def run_job_until(
    settings: Settings, done: Callable[[], bool], *args: str, log: Path, timeout_s: float = 300
) -> None:
    """Run the (unbounded) job until ``done()`` holds, then stop it; fail with its log tail on timeout."""
    restore = () if "--restore" in args else ("--restore", "none")
    proc = start_job(settings, *restore, *args, log=log)
    try:
        deadline = time.monotonic() + timeout_s
        while not done():
            if proc.poll() is not None:
                raise AssertionError(f"job exited {proc.returncode} early:\n{tail(log)}")
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached in {timeout_s}s:\n{tail(log)}")
            time.sleep(1.0)
    finally:
        stop_job(proc)


def stop_job(proc: subprocess.Popen[Any], sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the job's whole process group and wait for all of it.

    Not only for the Python process: the JVM may flush to Redis a moment after it, and a test that
    reads Redis next must see what the job left, not what it is still writing.
    """
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    wait_for_group(proc.pid, timeout_s=30)


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def pulse_job(settings: Settings, *args: str, log: Path, timeout_s: float = 180) -> str:
    """Run ``pulse job ARGS`` (submit, savepoint, cancel...) to completion; its last stdout line."""
    result = subprocess.run([sys.executable, "-m", "pulse", "job", *args], cwd=REPO_ROOT,
                            env={**inherited_env(), **settings.to_env()}, capture_output=True, text=True,
                            timeout=timeout_s, check=False)
    with log.open("a") as out:
        out.write(f"$ pulse job {' '.join(args)}\n{result.stdout}{result.stderr}\n")
    assert result.returncode == 0, f"pulse job {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout.strip().splitlines()[-1]
