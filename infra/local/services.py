"""The local services behind ``pulse up|down|status``: Kafka, Redis and, on request, a Flink cluster.

Without ``--flink`` the job runs on its own embedded MiniCluster (``pulse job run``); with it,
``pulse up --flink`` adds a standalone cluster (1 JobManager + N TaskManagers) that
``pulse job submit`` sends the job to.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from config import Settings
from infra.local.flink import ClusterShape, FlinkCluster
from infra.local.kafka import KafkaBroker
from infra.local.process import ManagedProcess
from infra.local.redis import RedisServer


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``pulse status``."""

    service: str
    address: str
    pid: int | None
    health: str  # "healthy" | "unhealthy" | "stopped"
    log: str

    def as_dict(self) -> dict[str, object]:
        """For ``--json``."""
        return asdict(self)


class LocalServices:
    """Start, stop and inspect the local services named by ``settings``."""

    def __init__(self, settings: Settings) -> None:
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        self.settings = settings
        home = settings.home.resolve()  # processes started with real paths: a symlinked home finds them
        self.kafka = KafkaBroker(home, settings.kafka_port, settings.kafka_controller_port,
                                 settings.kafka_heap)
        self.redis = RedisServer(home, settings.redis_port, password)
        self.flink = FlinkCluster(home, ClusterShape(
            rest_port=settings.flink_rest_port, rpc_port=settings.flink_rpc_port,
            taskmanagers=settings.flink_taskmanagers, slots_per_taskmanager=settings.flink_task_slots,
            metrics_port=settings.metrics_port or 9249,
        ))

    def up(self, *, flink: bool = False) -> list[ServiceStatus]:
        """Start what is not running (idempotent) and wait until each is healthy."""
        self.redis.start(self.settings.start_timeout_s)
        self.kafka.start(self.settings.start_timeout_s)
        if flink:
            self.flink.start(self.settings.start_timeout_s)
        return self.status()

    def down(self) -> list[str]:
        """Stop every service of ours (the Flink cluster first); the names of those that were running."""
        stopped = [p.name for p in self.flink.processes() if p.pid() is not None]
        self.flink.stop()
        for name, process in (("kafka", self.kafka.process), ("redis", self.redis.process)):
            if process.stop():
                stopped.append(name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Service, address, pid and health of each service (Flink's only while it runs)."""
        statuses = [
            _status("kafka", self.kafka.bootstrap, self.kafka.process, self.kafka.healthy),
            _status("redis", self.redis.url, self.redis.process, self.redis.healthy),
        ]
        if any(p.pid() is not None for p in self.flink.processes()):
            statuses.append(_status("flink-jm", self.flink.address, self.flink.jobmanager, self.flink.healthy))
            statuses += [_status(f"flink-tm{i}", "-", tm, lambda: True)
                         for i, tm in enumerate(self.flink.taskmanagers, start=1)]
        return statuses


def _status(name: str, address: str, process: ManagedProcess, healthy: object) -> ServiceStatus:
    pid = process.pid()
    if pid is None:
        health = "stopped"
    else:
        try:
            health = "healthy" if healthy() else "unhealthy"  # type: ignore[operator]
        except Exception:  # noqa: BLE001 - a failing probe is an unhealthy service
            health = "unhealthy"
    return ServiceStatus(name, address, pid, health, str(process.log_file))
