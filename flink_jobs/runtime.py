"""How Pulse runs PyFlink: one place that builds the execution environment, the Kafka source and sink.

Checked against apache-flink 2.2.1 with ``flink-sql-connector-kafka-5.0.0-2.2.jar`` on Java 17
(docs/adr/0002-flink-execution-mode.md has the measurements behind the defaults).

* :class:`RuntimeOptions` — how the job runs (jars, parallelism, checkpoints, state backend,
  restarts, Python execution mode and bundles), one frozen value checked when built.
* :func:`make_environment` — a ``StreamExecutionEnvironment`` with the given jars loaded,
  ``python.executable`` set to this interpreter, exactly-once checkpointing, a state backend,
  a fixed-delay restart strategy and the Python execution mode / bundle settings. Everything is
  passed in a :class:`~pyflink.common.Configuration` to ``get_execution_environment`` so the
  local MiniCluster (and a remote cluster) see the same options.
* :func:`kafka_source` — value-only, raw ``bytes`` (``ByteArraySchema``), starting from the
  group's committed offsets or, when it has none, the earliest offsets.
* :func:`kafka_sink` — raw ``bytes`` values, at-least-once or exactly-once (transactional,
  with ``transaction.timeout.ms`` below the broker's 15-minute maximum).

Pitfall: ``env.from_source(source, watermark_strategy, name)`` silently drops a Python
``TimestampAssigner``. Pass ``WatermarkStrategy.no_watermarks()`` there and call
``assign_timestamps_and_watermarks`` on the resulting stream.

>>> config = runtime_options(RuntimeOptions(parallelism=2, execution_mode="thread", checkpoint_interval_ms=None))
>>> config["python.execution-mode"], config["parallelism.default"]
('thread', '2')
>>> "execution.checkpointing.interval" in config
False
>>> RuntimeOptions(state_backend="memory")
Traceback (most recent call last):
...
ValueError: state_backend must be 'hashmap' or 'rocksdb', not 'memory'
"""

from __future__ import annotations

import os
import site
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pyflink starts a JVM on first use; importing this module must stay cheap
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import KafkaSink, KafkaSource

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Kafka brokers refuse transactions longer than ``transaction.max.timeout.ms`` (15 min by default);
#: Flink's KafkaSink asks for 1 h unless told otherwise, and then every transaction fails.
DEFAULT_TRANSACTION_TIMEOUT_MS = 10 * 60 * 1000

StateBackend = Literal["hashmap", "rocksdb"]
ExecutionMode = Literal["thread", "process"]
StartingOffsets = Literal["committed-or-earliest", "earliest", "latest"]


def _file_url(path: str | Path) -> str:
    text = str(path)
    if "://" in text:
        return text
    return Path(text).resolve().as_uri()


def worker_python_path() -> str:
    """``python.pythonpath``: this interpreter's site-packages and the repo root.

    Thread mode runs Python *embedded in the JVM* (pemja). That interpreter is initialised from
    the base installation the venv points at, not the venv: without this it fails with
    ``pemja.core.PythonException: <class 'ModuleNotFoundError'>: No module named 'pemja'``.
    The repo root is listed too because ``.pth`` files (the editable install of ``schemas``,
    ``online_models``...) are not processed for paths added this way.
    """
    paths = [*site.getsitepackages(), str(REPO_ROOT)]
    return os.pathsep.join(dict.fromkeys(paths))


@dataclass(frozen=True, slots=True)
class RuntimeOptions:
    """How a job runs, as one value: built once (``flink_jobs.launch`` builds it from ``Settings``).

    Checked when built. ``checkpoint_interval_ms=None`` disables checkpointing;
    ``restart_attempts=0`` means no restart; ``jars`` are the caller's (paths or URLs), none by
    default: the Kafka connector is resolved outside the job (``infra.local.jars``).
    """

    jars: tuple[str | Path, ...] = ()
    parallelism: int = 1
    checkpoint_interval_ms: int | None = 10_000
    checkpoint_dir: str | Path | None = None
    state_backend: StateBackend = "hashmap"
    execution_mode: ExecutionMode = "process"
    bundle_size: int = 1000
    bundle_time_ms: int = 1000
    restart_attempts: int = 3
    restart_delay_ms: int = 5_000
    python_executable: str | None = None
    rest_port: int | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state_backend not in ("hashmap", "rocksdb"):
            raise ValueError(f"state_backend must be 'hashmap' or 'rocksdb', not {self.state_backend!r}")
        if self.execution_mode not in ("thread", "process"):
            raise ValueError(f"execution_mode must be 'thread' or 'process', not {self.execution_mode!r}")
        if self.parallelism < 1 or self.bundle_size < 1 or self.bundle_time_ms < 1:
            raise ValueError("parallelism, bundle_size and bundle_time_ms must be >= 1")
        object.__setattr__(self, "jars", tuple(self.jars))  # any iterable in, a tuple kept


#: Buffer debloating keeps about 200 ms of throughput in flight between operators, so a checkpoint
#: barrier queues behind less data (ADR 0007, fourth session: at a paced 5,000 ev/s the job keeps up,
#: checkpoint p99 2.2 s -> 1.3 s). Checkpoints stay aligned: an unaligned barrier could overtake the
#: batch that writes the cached users back. ``PULSE_JOB_FLINK_CONF`` overrides both keys.
NETWORK_BUFFERS: dict[str, str] = {
    "taskmanager.network.memory.buffer-debloat.enabled": "true",
    "taskmanager.network.memory.buffer-debloat.target": "200 ms",
}


def runtime_options(options: RuntimeOptions) -> dict[str, str]:
    """The Flink configuration (key -> string value) :func:`make_environment` applies.

    Pure (no JVM): handy for logging, tests and for writing a cluster's ``config.yaml``.
    """
    config = _python_config(options)
    config["state.backend.type"] = options.state_backend
    # Chained Java steps (message filters, key selectors) hand records on without a deep copy;
    # the Python operators convert each record on arrival and keep nothing of it.
    config["pipeline.object-reuse"] = "true"
    jar_urls = [_file_url(j) for j in options.jars]
    if jar_urls:
        config["pipeline.jars"] = ";".join(jar_urls)
    config |= _checkpoint_config(options)
    config |= NETWORK_BUFFERS
    config |= _restart_config(options)
    if options.rest_port is not None:
        # The local MiniCluster binds its REST endpoint to a random port unless told otherwise.
        config["rest.port"] = str(options.rest_port)
        config["rest.bind-port"] = str(options.rest_port)
    config.update(options.extra)
    return config


def _python_config(options: RuntimeOptions) -> dict[str, str]:
    """Parallelism, and where and how the job's Python code runs."""
    python = options.python_executable or sys.executable
    return {
        "parallelism.default": str(options.parallelism),
        # The venv's interpreter, so Python workers (process mode, a cluster's TaskManagers) import
        # pyflink and Pulse's packages; python.client.executable compiles the job on submission.
        "python.executable": python,
        "python.client.executable": python,
        "python.pythonpath": worker_python_path(),
        "python.execution-mode": options.execution_mode,
        "python.fn-execution.bundle.size": str(options.bundle_size),
        "python.fn-execution.bundle.time": str(options.bundle_time_ms),
    }


def _checkpoint_config(options: RuntimeOptions) -> dict[str, str]:
    """Exactly-once checkpoints, retained on cancel so a job can be restored from them."""
    config: dict[str, str] = {}
    interval = options.checkpoint_interval_ms
    if interval is not None:
        config["execution.checkpointing.interval"] = f"{interval} ms"
        config["execution.checkpointing.mode"] = "EXACTLY_ONCE"
        config["execution.checkpointing.min-pause"] = f"{min(interval // 2, 5000)} ms"
        # Keep the last checkpoint when the job is cancelled, so it can be restored from.
        config["execution.checkpointing.externalized-checkpoint-retention"] = "RETAIN_ON_CANCELLATION"
    if options.checkpoint_dir is not None:
        config["execution.checkpointing.dir"] = _file_url(options.checkpoint_dir)
    if options.state_backend == "rocksdb":
        config["execution.checkpointing.incremental"] = "true"
    return config


def _restart_config(options: RuntimeOptions) -> dict[str, str]:
    """A fixed-delay restart strategy, or none."""
    if options.restart_attempts <= 0:
        return {"restart-strategy.type": "none"}
    return {
        "restart-strategy.type": "fixed-delay",
        "restart-strategy.fixed-delay.attempts": str(options.restart_attempts),
        "restart-strategy.fixed-delay.delay": f"{options.restart_delay_ms} ms",
    }


def make_environment(options: RuntimeOptions) -> StreamExecutionEnvironment:
    """A ``StreamExecutionEnvironment`` configured the way Pulse runs (see :func:`runtime_options`).

    Without a cluster to submit to, this is a local MiniCluster inside this process's JVM
    (the py4j gateway); in ``process`` mode its Python worker then runs in *this* process
    (PyFlink's loopback server) unless ``_python_worker_execution_mode=process`` is set.
    """
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    missing = [str(j) for j in options.jars if "://" not in str(j) and not Path(j).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Flink jars not found: {missing}; resolve them with `python -m infra.local.jars` (needs mvn)"
        )
    flink = runtime_options(options)
    jar_urls = flink.pop("pipeline.jars", "")
    config = Configuration()
    for key, value in flink.items():
        config.set_string(key, value)
    if flink.get("execution.target") == "remote":
        env = _remote_environment(flink["rest.address"], int(flink["rest.port"]), config, jar_urls)
    else:
        env = StreamExecutionEnvironment.get_execution_environment(config)
    if jar_urls:
        # add_jars also puts the jars on the client's context class loader, which the Python
        # wrappers of the connector (KafkaSource.builder(), ...) need before the job is built.
        env.add_jars(*jar_urls.split(";"))
    env.set_parallelism(options.parallelism)
    return env


def _remote_environment(host: str, port: int, config: Any, jar_urls: str) -> StreamExecutionEnvironment:
    """An environment that submits to the cluster whose REST API is ``host:port``.

    ``get_execution_environment`` always builds a MiniCluster outside the ``flink`` CLI (it
    ignores ``execution.target``); Java's ``createRemoteEnvironment`` ships the jars given.
    """
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    paths = [url.removeprefix("file://") for url in jar_urls.split(";") if url]
    j_jars = gateway.new_array(gateway.jvm.String, len(paths))
    for i, path in enumerate(paths):
        j_jars[i] = path
    j_env_class = gateway.jvm.org.apache.flink.streaming.api.environment.StreamExecutionEnvironment
    return StreamExecutionEnvironment(j_env_class.createRemoteEnvironment(host, port, config._j_configuration, j_jars))


def kafka_source(
    bootstrap: str,
    topic: str | list[str],
    group_id: str,
    *,
    bounded: bool = False,
    starting_offsets: StartingOffsets = "committed-or-earliest",
    properties: Mapping[str, str] | None = None,
    with_position: bool = False,
) -> KafkaSource:
    """A source of raw record values (Python ``bytes``) from ``topic``.

    ``with_position=True`` prefixes each value with its partition and offset
    (:func:`split_position` takes them off again), through the Java deserializer in
    ``pulse-flink-kafka.jar`` (``flink_jobs/java``): PyFlink itself only has value-only ones.

    Starts from ``group_id``'s committed offsets, or the earliest ones where the group has none
    (offsets are committed to Kafka on each completed checkpoint; on restore Flink's own
    checkpointed offsets win). ``bounded=True`` stops at the offsets that are latest when the
    job starts (tests, backfills, benchmarks).
    """
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    start = _starting_offsets(starting_offsets)
    topics = [topic] if isinstance(topic, str) else list(topic)
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(*topics)
        .set_group_id(group_id)
        .set_starting_offsets(start)
        .set_properties(
            {
                # Find partitions added to the topic while the job runs.
                "partition.discovery.interval.ms": "60000",
                "commit.offsets.on.checkpoint": "true",
                **(properties or {}),
            }
        )
    )
    if with_position:
        from pyflink.java_gateway import get_gateway

        builder._j_builder.setDeserializer(get_gateway().jvm.pulse.flink.PositionedValueDeserializer())
    else:
        builder = builder.set_value_only_deserializer(ByteArraySchema())
    if bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    return builder.build()


def _starting_offsets(name: StartingOffsets) -> Any:
    """The ``KafkaOffsetsInitializer`` a source starts from."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetResetStrategy, KafkaOffsetsInitializer

    if name == "committed-or-earliest":
        return KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    if name == "earliest":
        return KafkaOffsetsInitializer.earliest()
    if name == "latest":
        return KafkaOffsetsInitializer.latest()
    raise ValueError(f"unknown starting_offsets {name!r}")


#: Bytes the positioned deserializer puts before a value: partition (int32) + offset (int64), big endian.
POSITION_HEADER = struct.Struct(">iq")


def split_position(positioned: bytes) -> tuple[int, int, bytes]:
    """``(partition, offset, value)`` of a value read with ``with_position=True``.

    >>> split_position(POSITION_HEADER.pack(3, 42) + b"payload")
    (3, 42, b'payload')
    """
    partition, offset = POSITION_HEADER.unpack_from(positioned)
    return partition, offset, bytes(positioned[POSITION_HEADER.size:])


def kafka_sink(
    bootstrap: str,
    topic: str,
    *,
    exactly_once: bool,
    transactional_id_prefix: str | None = None,
    transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
    properties: Mapping[str, str] | None = None,
) -> KafkaSink:
    """A sink of raw ``bytes`` values (no key) to ``topic``.

    The stream must be typed ``Types.PRIMITIVE_ARRAY(Types.BYTE())`` (declare ``output_type`` on
    the operator in front), else PyFlink pickles the Python ``bytes`` before the sink sees them.
    Exactly-once writes in Kafka transactions committed on checkpoints: it needs checkpointing,
    a ``transactional_id_prefix`` unique per job (and stable across restarts of that job), and
    consumers reading with ``isolation.level=read_committed``.
    """
    from pyflink.common.serialization import ByteArraySchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    serializer = (
        KafkaRecordSerializationSchema.builder()
        .set_topic(topic)
        .set_value_serialization_schema(ByteArraySchema())
        .build()
    )
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(serializer)
        .set_property("compression.type", "lz4")
        .set_property("linger.ms", "20")
    )
    if exactly_once:
        if not transactional_id_prefix:
            raise ValueError("an exactly-once KafkaSink needs a transactional_id_prefix")
        builder = (
            builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(transactional_id_prefix)
            .set_property("transaction.timeout.ms", str(transaction_timeout_ms))
        )
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    for key, value in (properties or {}).items():
        builder = builder.set_property(key, value)
    return builder.build()
