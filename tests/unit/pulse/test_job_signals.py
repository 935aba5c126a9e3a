"""SIGTERM to ``pulse job run``: one line, then death by SIGTERM (the status a service manager calls a clean stop)."""

from __future__ import annotations

import signal
import subprocess
import sys

from config import REPO_ROOT
from pulse.commands.job import STOPPED_BY_SIGTERM, say_stopped_on_sigterm

# Waits as the CLI does while the job runs: the main thread blocked reading Py4J's socket.
_WAITING = """
import socket
from pulse.commands.job import say_stopped_on_sigterm
say_stopped_on_sigterm()
ours, theirs = socket.socketpair()
print("waiting", flush=True)
ours.recv(1)
print("not stopped", flush=True)
"""


def test_sigterm_prints_one_line_then_ends_the_process_by_sigterm() -> None:
    process = subprocess.Popen([sys.executable, "-c", _WAITING], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigterm)
    assert process.stdout is not None
    try:
        assert process.stdout.readline() == "waiting\n"
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGTERM
    assert stderr == STOPPED_BY_SIGTERM + "\n"
    assert stdout == ""


def test_a_handler_set_before_stays() -> None:
    def ours(_signum: int, _frame: object) -> None:
        return None

    before = signal.signal(signal.SIGTERM, ours)
    try:
        say_stopped_on_sigterm()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, before)


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
