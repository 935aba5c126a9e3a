"""`ManagedProcess` recognises its process through a symlinked home (no services: a `sleep` stands in)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.local.process import ManagedProcess


@pytest.fixture
def marked_process(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A process whose command line names a file under the real home, as a service's would."""
    home = tmp_path / "real-home"
    (home / "run").mkdir(parents=True)
    config = home / "server.properties"
    config.write_text("")
    proc = subprocess.Popen(["bash", "-c", 'sleep 60; : "$0"', str(config)])
    (home / "run" / "svc.pid").write_text(str(proc.pid))
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
    assert through_link.pid() == proc.pid
    assert (home / "run" / "svc.pid").exists()


def test_a_pid_that_is_not_ours_is_forgotten(
    tmp_path: Path, marked_process: tuple[Path, subprocess.Popen[bytes]]
) -> None:
    home, _ = marked_process
    other = ManagedProcess("svc", home, markers=(str(tmp_path / "elsewhere" / "server.properties"),), ports=())
    assert other.pid() is None
    assert not (home / "run" / "svc.pid").exists()  # a stale pid file (e.g. a recycled pid) is removed
