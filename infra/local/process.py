"""A local server process Pulse starts, watches and stops: pid file, log file, health wait.

Each service owns ``<home>/run/<name>.pid`` and ``<home>/logs/<name>.log``. A process is
"ours" when the pid file names a live process whose command line still carries the
service's marker, so a recycled pid is never killed by mistake.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not be started or stopped; the message says what to do."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port the OS says is free now (for tests that start their own services)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ManagedProcess:
    """One server process: how to start it, how to tell it is healthy, where it logs."""

    name: str
    home: Path
    markers: Sequence[str]  # strings of which one is in the process's command line (and no other's)
    ports: Sequence[int]
    # The process this object started, if any: until it has exec'ed, /proc shows the parent's
    # command line, so for our own child the handle, not the markers, says whether it lives.
    _child: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    #: Linux: the process gets SIGTERM when the one that started it dies, however it died (the test
    #: harness: a killed pytest run leaves no broker behind). Off for `pulse up`, whose services
    #: outlive the command.
    die_with_parent: bool = field(default=False, repr=False)
    # Where the log stood when this object started the process: each start appends to the same file,
    # and an error shows this run's lines, not an earlier run's failure.
    _log_from: int = field(default=0, init=False, repr=False)

    @property
    def pid_file(self) -> Path:
        """Where the pid of the running process is kept."""
        return self.home / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """Where the process's stdout and stderr go."""
        return self.home / "logs" / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of our live process, or None (a stale pid file is removed)."""
        if self._child is not None and self._child.poll() is None:
            return self._child.pid
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _cmdline_contains(pid, self.markers):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` in its own process group unless ours is already running."""
        running = self.pid()
        if running is not None:
            return running
        for port in self.ports:
            if not port_is_free(port):
                raise ServiceError(
                    f"{self.name}: port {port} on 127.0.0.1 is taken by another process; "
                    f"free it or choose another port (see `pulse up --help`)"
                )
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log_out:
            self._log_from = self.log_file.stat().st_size
            proc = subprocess.Popen(
                list(argv),
                stdout=log_out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own group: `down` stops children too
                preexec_fn=_terminate_with_parent if self.die_with_parent else None,
            )
        self._child = proc
        self.pid_file.write_text(str(proc.pid))
        log.info("started %s (pid %d), log %s", self.name, proc.pid, self.log_file)
        return proc.pid

    def wait_healthy(self, check: Callable[[], bool], timeout_s: float) -> None:
        """Poll ``check`` until it passes; fail naming the log file if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.pid() is None:
                raise ServiceError(
                    f"{self.name} exited during start-up; see {self.log_file}\n{self.log_tail()}")
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - any failure of a probe means "not yet"
                log.debug("%s not healthy yet: %s", self.name, exc)
            time.sleep(0.3)
        raise ServiceError(
            f"{self.name} not healthy after {timeout_s:.0f}s; see {self.log_file}\n{self.log_tail()}")

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM the process group, SIGKILL what is left after ``timeout_s``. True if it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            log.warning("%s did not stop within %.0fs; killing it", self.name, timeout_s)
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the process wrote since this object started it (else the log's), indented."""
        try:
            with self.log_file.open("rb") as log_in:
                size = log_in.seek(0, os.SEEK_END)
                log_in.seek(self._log_from if self._log_from <= size else 0)  # a smaller file: rotated
                tail = log_in.read().decode(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            return "    (no log yet)"
        if not tail:
            return "    (nothing in the log from this run)"
        return "\n".join(f"    {line}" for line in tail)


def _signal_zero(kill: Callable[[int, int], None], target: int) -> bool | None:
    """Signal 0 to a process (``os.kill``) or group (``os.killpg``).

    False if there is none, True if it is someone else's (it lives; we may not look closer), None if
    it is ours to look at further.
    """
    try:
        kill(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return None


def _alive(pid: int) -> bool:
    if (found := _signal_zero(os.kill, pid)) is not None:
        return found
    # A zombie (exited, not yet reaped by us) is as good as dead.
    fields = _stat(pid)
    if fields is None:
        return False
    if fields[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        return False
    return True


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces, as ``/proc`` shows them now; None if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return None


def _cmdline_contains(pid: int, markers: Sequence[str]) -> bool:
    if not _alive(pid):
        return False
    cmdline = command_line(pid)
    if cmdline is None:
        return False
    # A path marker matches by its real path too: a checkout whose home is a symlink to this one's
    # must recognise the process the other started (and not remove its pid file as stale).
    return any(marker in cmdline or (marker.startswith("/") and os.path.realpath(marker) in cmdline)
               for marker in markers)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def wait_for_group(pgid: int, timeout_s: float) -> None:
    """Wait until no live process of group ``pgid`` is left; SIGKILL the group after ``timeout_s``.

    The leader exiting is not enough: a job's JVM, in its group, may still flush to Redis while it
    shuts down, after the Python process that started it is gone.
    """
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            deadline = time.monotonic() + 10.0
        time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of group ``pgid`` is left."""
    if (found := _signal_zero(os.killpg, pgid)) is not None:
        return found
    return any(_pgid_of(int(entry)) == pgid for entry in os.listdir("/proc") if entry.isdigit())


def _pgid_of(pid: int) -> int | None:
    """The process group of a live (not zombie) process, from /proc."""
    fields = _stat(pid)
    return None if fields is None or fields[0] == "Z" else int(fields[2])


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first, the group third); None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return None


def _terminate_with_parent() -> None:
    """In the child before exec: SIGTERM when the parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux)."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
