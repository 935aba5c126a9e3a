"""A local standalone Flink cluster from the apache-flink wheel: 1 JobManager + N TaskManagers.

``pulse up --flink`` starts it; ``pulse job submit`` sends the job to it; ``pulse down`` stops it.
The wheel ships ``pyflink/{bin,lib,opt,plugins,conf}``. The venv's copy is shared, so the cluster
gets a home of its own under ``<home>/flink``: ``lib/`` of symlinks plus ``flink-python`` (the
Python operators need it on a cluster's classpath) and its own ``conf/config.yaml``. Each process
runs in the foreground under :class:`~infra.local.process.ManagedProcess` (pid file, log file,
health wait, SIGTERM/SIGKILL of its group), so a test can SIGKILL one TaskManager by pid.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.local.process import ManagedProcess, ServiceError

#: ``config.yaml`` keys a Pulse cluster sets (besides ports), chosen for a 2-core, 24 GiB machine.
CLUSTER_DEFAULTS: dict[str, str] = {
    "jobmanager.rpc.address": "localhost",
    "jobmanager.bind-host": "localhost",
    "taskmanager.bind-host": "localhost",
    "taskmanager.host": "localhost",
    "rest.address": "localhost",
    "rest.bind-address": "localhost",
    "jobmanager.memory.process.size": "1024m",
    "taskmanager.memory.process.size": "1536m",
    "taskmanager.rpc.port": "0",
    "taskmanager.data.port": "0",
    "blob.server.port": "0",
    # Spread a job's slots over the TaskManagers: each is a JVM with its own Python interpreter
    # lock, so parallelism 2 on two TaskManagers uses both cores (bench/README.md).
    "taskmanager.load-balance.mode": "SLOTS",
    # A TaskManager killed by a test is declared dead quickly, so the job restarts on the others.
    "heartbeat.timeout": "15000",
    "heartbeat.interval": "3000",
    "metrics.reporter.prom.factory.class": "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
    # TaskManager-level on a cluster; the same as flink_jobs.runtime.NETWORK_BUFFERS (ADR 0007).
    "taskmanager.network.memory.buffer-debloat.enabled": "true",
    "taskmanager.network.memory.buffer-debloat.target": "200 ms",
    # As the wheel's own config.yaml: Java 17 module openings Flink (and its Kryo/ClassCache
    # clean-up) needs; without them every task end logs an InaccessibleObjectException.
    "env.java.opts.all": " ".join(
        [f"--add-exports={m}=ALL-UNNAMED" for m in (
            "java.rmi/sun.rmi.registry", "jdk.compiler/com.sun.tools.javac.api",
            "jdk.compiler/com.sun.tools.javac.file", "jdk.compiler/com.sun.tools.javac.parser",
            "jdk.compiler/com.sun.tools.javac.tree", "jdk.compiler/com.sun.tools.javac.util",
            "java.security.jgss/sun.security.krb5")]
        + [f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
            "java.lang", "java.net", "java.io", "java.nio", "sun.nio.ch", "java.lang.reflect", "java.text",
            "java.time", "java.util", "java.util.concurrent", "java.util.concurrent.atomic",
            "java.util.concurrent.locks")]
    ),
}


def pyflink_home() -> Path:
    """The ``pyflink`` package folder of this interpreter (bin/, lib/, opt/, plugins/, conf/)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


@dataclass(frozen=True)
class ClusterShape:
    """Ports and sizes of the local cluster (from Settings: ``flink_*``)."""

    rest_port: int = 8081
    rpc_port: int = 6123
    taskmanagers: int = 2
    slots_per_taskmanager: int = 2
    metrics_port: int = 9249  # first port of the reporter range (one port per JVM)


class FlinkCluster:
    """The local standalone cluster: its home, processes, REST address and health."""

    def __init__(self, home: Path, shape: ClusterShape) -> None:
        self.root = home / "flink"
        self.shape = shape
        self.conf_dir = self.root / "conf"
        self.lib_dir = self.root / "lib"
        self.jobmanager = ManagedProcess("flink-jobmanager", home, markers=(str(self.conf_dir),),
                                         ports=(shape.rest_port, shape.rpc_port))
        self.taskmanagers = [
            ManagedProcess(f"flink-taskmanager-{i}", home, markers=(str(self.conf_dir),), ports=())
            for i in range(1, shape.taskmanagers + 1)
        ]

    @property
    def rest_url(self) -> str:
        """Base URL of the JobManager's REST API (also what ``pulse job submit --jobmanager`` takes)."""
        return f"http://127.0.0.1:{self.shape.rest_port}"

    @property
    def address(self) -> str:
        """``host:port`` of the REST endpoint."""
        return f"127.0.0.1:{self.shape.rest_port}"

    def processes(self) -> list[ManagedProcess]:
        """JobManager first, then the TaskManagers."""
        return [self.jobmanager, *self.taskmanagers]

    # -- layout ------------------------------------------------------------------------------

    def config(self) -> dict[str, str]:
        """The cluster's ``config.yaml`` as flat keys."""
        python = sys.executable
        shape = self.shape
        last_metrics_port = shape.metrics_port + shape.taskmanagers
        return {
            **CLUSTER_DEFAULTS,
            "jobmanager.rpc.port": str(shape.rpc_port),
            "rest.port": str(shape.rest_port),
            "taskmanager.numberOfTaskSlots": str(shape.slots_per_taskmanager),
            "parallelism.default": "1",
            "python.executable": python,
            "python.client.executable": python,
            "metrics.reporter.prom.port": f"{shape.metrics_port}-{last_metrics_port}",
        }

    def prepare(self) -> None:
        """Write the cluster's home (idempotent): lib/ of symlinks + flink-python, conf/."""
        wheel = pyflink_home()
        self.lib_dir.mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        wanted = [*sorted((wheel / "lib").glob("*.jar")), *sorted((wheel / "opt").glob("flink-python-*.jar"))]
        if not any(j.name.startswith("flink-python-") for j in wanted):
            raise ServiceError(f"flink-python jar not found under {wheel / 'opt'}; is apache-flink installed?")
        for jar in wanted:
            link = self.lib_dir / jar.name
            if not link.exists():
                link.symlink_to(jar)
        for name in ("log4j-console.properties", "logback-console.xml"):
            source = wheel / "conf" / name
            if source.exists():
                (self.conf_dir / name).write_bytes(source.read_bytes())
        lines = [f"{key}: {value}" for key, value in sorted(self.config().items())]
        (self.conf_dir / "config.yaml").write_text("# Written by `pulse up --flink` (infra/local/flink.py).\n"
                                                   + "\n".join(lines) + "\n")

    def environment(self) -> dict[str, str]:
        """Environment of the bin/ scripts: this cluster's lib/, conf/ and log folder, the wheel's rest."""
        wheel = pyflink_home()
        return {
            "_FLINK_HOME_DETERMINED": "1",
            "FLINK_HOME": str(wheel),
            "FLINK_LIB_DIR": str(self.lib_dir),
            "FLINK_OPT_DIR": str(wheel / "opt"),
            "FLINK_PLUGINS_DIR": str(wheel / "plugins"),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.root / "log"),
            # The venv's interpreter and packages for the Python operators and the job client.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float) -> None:
        """Start what is not running (idempotent) and wait until every TaskManager has registered."""
        self.prepare()
        bin_dir = pyflink_home() / "bin"
        env = self.environment()
        self.jobmanager.start(["bash", str(bin_dir / "jobmanager.sh"), "start-foreground"], env=env)
        self.jobmanager.wait_healthy(self._rest_answers, timeout_s)
        for index in range(1, len(self.taskmanagers) + 1):
            self.start_taskmanager(index, env=env)
        self.jobmanager.wait_healthy(self.healthy, timeout_s)

    def start_taskmanager(self, index: int, env: dict[str, str] | None = None) -> int:
        """(Re)start TaskManager ``index`` (1-based) unless it runs; its pid."""
        bin_dir = pyflink_home() / "bin"
        taskmanager = self.taskmanagers[index - 1]
        return taskmanager.start(
            ["bash", str(bin_dir / "taskmanager.sh"), "start-foreground",
             "-D", f"taskmanager.resource-id=pulse-tm-{index}"],
            env=env or self.environment(),
        )

    def stop(self) -> bool:
        """Stop TaskManagers, then the JobManager. True if anything was running."""
        stopped = [tm.stop() for tm in self.taskmanagers]
        return self.jobmanager.stop() or any(stopped)

    # -- health ------------------------------------------------------------------------------

    def overview(self) -> dict[str, object]:
        """``GET /overview``: TaskManagers, slots, jobs running."""
        response = httpx.get(f"{self.rest_url}/overview", timeout=2.0)
        response.raise_for_status()
        return dict(response.json())

    def _rest_answers(self) -> bool:
        return bool(self.overview())

    def healthy(self) -> bool:
        """True when the REST API answers and every TaskManager has registered its slots."""
        overview = self.overview()
        return int(overview.get("taskmanagers", 0)) >= len(self.taskmanagers)  # type: ignore[call-overload]
