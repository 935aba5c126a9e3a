"""`ManagedProcess` recognises its process through a symlinked home (no services: a `sleep` stands in)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from config import REPO_ROOT
from infra.local.process import ManagedProcess, command_line, group_alive, wait_for_group


@pytest.fixture
def marked_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process whose command line names a file under the real home, as a service's would."""
    home = tmp_path / "real-home"
    (home / "run").mkdir(parents=True)
    config = home / "server.properties"
    config.write_text("")
    proc = subprocess.Popen(["bash", "-c", 'sleep 60; : "$0"', str(config)])
    (home / "run" / "svc.pid").write_text(str(proc.pid))
    # What the tests below read must already be there: CI once saw this process not recognised
    # (stop 41, not reproduced in 40 runs under load); a failure here says what /proc showed.
    deadline = time.monotonic() + 10
    while str(config) not in (command_line(proc.pid) or "") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert str(config) in (command_line(proc.pid) or ""), (
        f"the marked process (exit code {proc.poll()}) shows {command_line(proc.pid)!r} in /proc")
    yield home, proc
    proc.kill()
    proc.wait()


def test_a_symlinked_home_finds_the_process_and_keeps_its_pid_file(
    tmp_path: Path, marked_process: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    home, proc = marked_process
    link = tmp_path / "checkout" / ".local"
    link.parent.mkdir()
    link.symlink_to(home)
    through_link = ManagedProcess("svc", link, markers=(str(link / "server.properties"),), ports=())
    assert through_link.pid() == proc.pid, (
        f"pid file {(home / 'run' / 'svc.pid').exists()}, process exit code {proc.poll()}, "
        f"/proc shows {command_line(proc.pid)!r}")
    assert (home / "run" / "svc.pid").exists()


def test_a_pid_that_is_not_ours_is_forgotten(
    tmp_path: Path, marked_process: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    home, _ = marked_process
    other = ManagedProcess("svc", home, markers=(str(tmp_path / "elsewhere" / "server.properties"),), ports=())
    assert other.pid() is None
    assert not (home / "run" / "svc.pid").exists()  # a stale pid file (e.g. a recycled pid) is removed


def test_a_process_started_to_die_with_its_parent_ends_when_the_parent_is_killed(tmp_path: Path) -> None:
    """The test harness's services: a SIGKILLed pytest run must not leave a broker behind."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from infra.local.process import ManagedProcess\n"
        f"p = ManagedProcess('svc', Path({str(tmp_path)!r}), markers=('sleep',), ports=())\n"
        "p.die_with_parent = True\n"
        "print(p.start(['sleep', '60']), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO_ROOT)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert Path(f"/proc/{child}").exists()
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child), "the child outlived its killed parent"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_an_error_shows_this_runs_log_lines_not_an_earlier_runs(tmp_path: Path) -> None:
    """Each start appends to the same log: the demo's "the job stopped" once showed a failure of the day before."""
    process = ManagedProcess("svc", tmp_path, markers=("svc-marker",), ports=())
    for line in ("an earlier run failed: FileNotFoundException", "this run: stopped by SIGTERM"):
        process.start(["bash", "-c", f'echo "{line}"; : svc-marker'])
        assert process._child is not None
        process._child.wait()
    assert process.log_tail() == "    this run: stopped by SIGTERM"
    assert "an earlier run failed" in process.log_file.read_text()  # the file keeps every run
    process.log_file.write_text("")  # rotated meanwhile: the whole (new) file
    assert process.log_tail() == "    (nothing in the log from this run)"


def test_waiting_for_a_group_outlives_its_leader_and_kills_what_stays_too_long() -> None:
    # A leader that exits at once, leaving a child in its group (as a job's Python process leaves its JVM).
    leader = subprocess.Popen(["bash", "-c", "sleep 60 & echo $!"], stdout=subprocess.PIPE, start_new_session=True)
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.wait()
    assert group_alive(leader.pid)  # the leader is gone, its group is not
    started = time.monotonic()
    wait_for_group(leader.pid, timeout_s=0.5)
    assert not group_alive(leader.pid)
    assert time.monotonic() - started < 20  # killed after the timeout, not waited out
    stat = Path(f"/proc/{child}/stat")
    assert not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone (or not yet reaped)
