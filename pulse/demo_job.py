"""The job ``pulse demo`` runs in the background: a local process with a pid file that ``pulse down`` stops.

It is ``python -m pulse --home <home> job run`` in its own process group (the job's JVM is in the
same group). Its pid is kept in ``<home>/run/demo-job.pid`` and its output goes to
``<home>/logs/demo-job.log``, as for the local services (``infra/local/process.py``); the command
line carries the home, so a recycled pid is never signalled. Stopping it signals the whole group
and waits until no process of the group is left.
"""

from __future__ import annotations

import sys
from pathlib import Path

from config import REPO_ROOT, Settings
from infra.local.process import ManagedProcess, wait_for_group

NAME = "demo-job"


def job_argv(home: Path) -> list[str]:
    """The command line of the demo's job: the job as ``pulse job run`` runs it, resuming from its checkpoint."""
    return [sys.executable, "-m", "pulse", "--home", str(home), "job", "run"]


def demo_job(settings: Settings) -> ManagedProcess:
    """The demo's job as a managed process of ``settings.home`` (running or not)."""
    marker = " ".join(job_argv(settings.home)[1:])  # "-m pulse --home <home> job run"
    return ManagedProcess(NAME, settings.home, markers=[marker], ports=())


def start_demo_job(settings: Settings) -> ManagedProcess:
    """Start the job in the background (or find the one already running) with ``settings``' environment."""
    job = demo_job(settings)
    job.start(job_argv(settings.home), env=settings.to_env(), cwd=REPO_ROOT)
    return job


def stop_demo_job(job: ManagedProcess, timeout_s: float = 60.0) -> bool:
    """SIGTERM the job's process group, SIGKILL it after ``timeout_s``; wait for the whole group. True if it ran."""
    pid = job.pid()
    if pid is None:
        return False
    job.stop(timeout_s=timeout_s)  # waits for the group leader (the Python process)
    wait_for_group(pid, timeout_s)  # and for the rest of the group (the JVM)
    return True


__all__ = ["NAME", "demo_job", "job_argv", "start_demo_job", "stop_demo_job"]
