"""Jobs on a Flink cluster through its REST API: list, savepoint, stop with savepoint, cancel.

PyFlink 2.x ``JobClient.trigger_savepoint`` / ``stop_with_savepoint`` call Java signatures that
no longer exist (PYFLINK-NOTES), so Pulse talks to the JobManager's REST API, which works the
same for a standalone cluster (``pulse up --flink``) and for any other one.

>>> rest_base("127.0.0.1:8081"), rest_base("http://flink:8081/")
('http://127.0.0.1:8081', 'http://flink:8081')
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

#: Job states after which a job id will not run again.
TERMINAL_STATES = frozenset({"FINISHED", "CANCELED", "FAILED", "SUSPENDED"})


class FlinkRestError(RuntimeError):
    """The cluster refused or failed an operation; the message says which and why."""


def rest_base(jobmanager: str) -> str:
    """``host:port`` or a URL → the REST base URL without a trailing slash."""
    base = jobmanager if "://" in jobmanager else f"http://{jobmanager}"
    return base.rstrip("/")


@dataclass(frozen=True)
class JobSummary:
    """One line of ``pulse job list``."""

    job_id: str
    name: str
    state: str
    duration_s: float
    tasks_running: int = 0
    tasks_total: int = 0

    @property
    def tasks_up(self) -> bool:
        """Running with every task running (restored and opened: Flink's INITIALIZING is over).

        >>> [JobSummary("j", "pulse", "RUNNING", 9.0, running, 7).tasks_up for running in (5, 7)]
        [False, True]
        """
        return self.state == "RUNNING" and 0 < self.tasks_total == self.tasks_running


class FlinkRest:
    """A small client of one cluster's REST API."""

    def __init__(self, jobmanager: str, timeout_s: float = 10.0) -> None:
        self.base = rest_base(jobmanager)
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx  # here, not at the top: every `pulse` command imports this module (~75 ms)

        try:
            response = httpx.request(method, f"{self.base}{path}", timeout=self.timeout_s, **kwargs)
        except httpx.HTTPError as exc:
            raise FlinkRestError(f"Flink REST API at {self.base} did not answer {method} {path}: {exc}") from None
        if response.status_code >= 400:
            errors = _errors_of(response)
            raise FlinkRestError(f"{method} {path} → HTTP {response.status_code}: {errors}")
        return response.json() if response.content else {}

    def jobs(self) -> list[JobSummary]:
        """Every job the cluster knows, newest first."""
        found = self._call("GET", "/jobs/overview")["jobs"]
        found.sort(key=lambda j: j.get("start-time", 0), reverse=True)
        return [JobSummary(j["jid"], j["name"], j["state"], j.get("duration", 0) / 1000,
                           j.get("tasks", {}).get("running", 0), j.get("tasks", {}).get("total", 0)) for j in found]

    def running_job(self, name: str | None = None) -> str:
        """The id of the one running job (named ``name`` when given); fails when none or several."""
        running = [j for j in self.jobs() if j.state == "RUNNING" and (name is None or j.name == name)]
        if len(running) != 1:
            which = f" named {name!r}" if name else ""
            listed = ", ".join(f"{j.job_id} ({j.name})" for j in running) or "none"
            raise FlinkRestError(f"expected one running job{which} at {self.base}, found: {listed}; pass --job-id")
        return running[0].job_id

    def state(self, job_id: str) -> str:
        """``RUNNING``, ``FINISHED``, ``CANCELED``, ...."""
        return str(self._call("GET", f"/jobs/{job_id}")["state"])

    def restarts(self, job_id: str) -> int:
        """How often the job has restarted since it was submitted (Flink's ``numRestarts``)."""
        metrics = self._call("GET", f"/jobs/{job_id}/metrics", params={"get": "numRestarts"})
        return int(float(metrics[0]["value"])) if metrics else 0

    def savepoint(self, job_id: str, target_dir: Path, *, stop: bool = False, timeout_s: float = 120.0) -> Path:
        """Take a savepoint (and stop the job, when ``stop``); the savepoint's folder."""
        if stop:
            trigger = self._call("POST", f"/jobs/{job_id}/stop",
                                 json={"targetDirectory": target_dir.as_uri(), "drain": False})
        else:
            trigger = self._call("POST", f"/jobs/{job_id}/savepoints",
                                 json={"target-directory": target_dir.as_uri(), "cancel-job": False})
        request_id = trigger["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self._call("GET", f"/jobs/{job_id}/savepoints/{request_id}")
            if status["status"]["id"] == "COMPLETED":
                operation = status.get("operation", {})
                if "failure-cause" in operation:
                    cause = operation["failure-cause"].get("stack-trace", "").splitlines()[:3]
                    raise FlinkRestError(f"savepoint of {job_id} failed: {' '.join(cause)}")
                return Path(operation["location"].removeprefix("file:"))
            time.sleep(0.5)
        raise FlinkRestError(f"savepoint of {job_id} not done after {timeout_s:.0f}s")

    def cancel(self, job_id: str) -> None:
        """Cancel the job (its last retained checkpoint stays)."""
        self._call("PATCH", f"/jobs/{job_id}", params={"mode": "cancel"})

    def wait_state(self, job_id: str, states: frozenset[str] | set[str], timeout_s: float = 60.0) -> str:
        """Wait until the job is in one of ``states``; the state reached."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state(job_id)
            if state in states:
                return state
            time.sleep(0.5)
        raise FlinkRestError(f"job {job_id} not in {sorted(states)} after {timeout_s:.0f}s")


def _errors_of(response: httpx.Response) -> str:
    try:
        errors = response.json().get("errors", [])
    except ValueError:
        return response.text[:300]
    # Flink puts a Java stack trace in errors[1]; its first line says what went wrong.
    return " | ".join(str(e).strip().splitlines()[0] for e in errors if str(e).strip())[:500]
