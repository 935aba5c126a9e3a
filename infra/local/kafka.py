"""A single-node Kafka 4 broker (KRaft, combined broker + controller) on loopback.

Open by default (one PLAINTEXT listener); given a :class:`~infra.local.kafka_security.BrokerSecurity`
it listens with ``SASL_SSL`` only, with SCRAM users made by Kafka's storage tool and ACLs on.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from infra.local.jars import ensure_jars, jar_dir
from infra.local.kafka_security import BrokerSecurity
from infra.local.process import ManagedProcess, ServiceError

LOG4J_CONFIG = Path(__file__).resolve().parent / "log4j2.properties"

# Internal topics need replication factor 1 on one node. transaction.max.timeout.ms stays at
# Kafka's 15 min; Pulse's exactly-once sink sets its producers' transaction.timeout.ms below it.
SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
{listeners}
log.dirs={data_dir}
num.partitions=4
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
transaction.max.timeout.ms=900000
auto.create.topics.enable=false
"""
OPEN_LISTENERS = """\
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"""


#: The broker JVM's collector and compiler options, as Kafka's own start scripts read them.
JVM_PERFORMANCE_OPTS = "KAFKA_JVM_PERFORMANCE_OPTS"


def jvm_performance_options() -> list[str]:
    """``$KAFKA_JVM_PERFORMANCE_OPTS`` split like a shell would, else G1 (Kafka's own default collector).

    ``-XX:TieredStopAtLevel=1 -XX:+UseSerialGC`` roughly halves a short-lived broker's CPU; the tests
    do not set it yet (tests/conftest.py says why).
    """
    return shlex.split(os.environ.get(JVM_PERFORMANCE_OPTS, "-XX:+UseG1GC"))


class KafkaBroker:
    """Kafka from Apache Kafka's jars; data under ``<home>/kafka``, log ``<home>/logs/kafka.log``."""

    def __init__(self, home: Path, port: int, controller_port: int, heap: str = "512m",
                 security: BrokerSecurity | None = None) -> None:
        self.home = home
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.security = security
        self.data_dir = home / "kafka" / f"data-{port}"
        self.config_file = home / "kafka" / f"server-{port}.properties"
        self.process = ManagedProcess("kafka", home, markers=(str(self.config_file),), ports=(port, controller_port))

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float) -> int:
        """Start (formatting storage on first run) and wait until the broker answers metadata."""
        if self.process.pid() is None:
            classpath = self._classpath()
            self._configure(classpath)
            self.process.start(
                [
                    self._java(),
                    f"-Xmx{self.heap}",
                    f"-Xms{self.heap}",
                    *jvm_performance_options(),
                    f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                    "-cp",
                    classpath,
                    "kafka.Kafka",
                    str(self.config_file),
                ]
            )
        self.process.wait_healthy(self.healthy, timeout_s)
        if self.security is not None:
            self.security.grant_users(self.admin_config())
        return self.process.pid() or 0

    def admin_config(self) -> dict[str, Any]:
        """A confluent-kafka config of the broker's own super user (open broker: just the address)."""
        # log_level 0: refused connections while the broker starts are expected, not news.
        config: dict[str, Any] = {"bootstrap.servers": self.bootstrap, "log_level": 0}
        return {**config, **(self.security.admin_client_config() if self.security else {})}

    def healthy(self) -> bool:
        """True when the broker returns cluster metadata."""
        metadata = AdminClient(self.admin_config()).list_topics(timeout=2)
        return bool(metadata.brokers)

    def _classpath(self) -> str:
        ensure_jars(self.home, "kafka")
        return str(jar_dir(self.home, "kafka") / "*")

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise ServiceError(
                "Java 17+ is needed to run Kafka 4; install a JDK (apt-get install openjdk-17-jre-headless)"
            )
        return java

    def _configure(self, classpath: str) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.touch(mode=0o600)
        self.config_file.chmod(0o600)  # a secured broker's file holds its JAAS passwords
        listeners = (self.security.listener_properties if self.security else OPEN_LISTENERS.format)(
            port=self.port, controller_port=self.controller_port
        )
        self.config_file.write_text(SERVER_PROPERTIES.format(
            controller_port=self.controller_port, data_dir=self.data_dir, listeners=listeners
        ))
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        result = subprocess.run(
            [
                self._java(),
                *jvm_performance_options(),
                "-cp",
                classpath,
                f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_file),
                *(self.security.storage_format_arguments() if self.security else ()),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            output = result.stdout + result.stderr
            shown = self.security.redact(output) if self.security else output
            raise ServiceError(f"formatting Kafka storage failed:\n{shown}")


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (what random-uuid prints).

    Like Kafka's own ``Uuid.randomUuid``, never one starting with ``-``: the storage tool would read
    it as an option and fail (``--cluster-id: expected one argument``), one format in 64.
    """
    import base64

    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return cluster_id
