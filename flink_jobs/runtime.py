"""How Pulse runs PyFlink: one place that builds the execution environment, the Kafka source and sink.

Checked against apache-flink 2.2.1 with ``flink-sql-connector-kafka-5.0.0-2.2.jar`` on Java 17
(docs/adr/0002-flink-execution-mode.md has the measurements behind the defaults).

* :func:`make_environment` — a ``StreamExecutionEnvironment`` with the connector jar loaded,
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

>>> options = runtime_options(parallelism=2, execution_mode="thread", checkpoint_interval_ms=None)
>>> options["python.execution-mode"], options["parallelism.default"]
('thread', '2')
>>> "execution.checkpointing.interval" in options
False
>>> runtime_options(state_backend="memory")
Traceback (most recent call last):
...
ValueError: state_backend must be 'hashmap' or 'rocksdb', not 'memory'
"""

from __future__ import annotations

import os
import site
import struct
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pyflink starts a JVM on first use; importing this module must stay cheap
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import KafkaSink, KafkaSource

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The shaded connector (the thin ``flink-connector-kafka`` jar does not work from Python).
KAFKA_CONNECTOR_JAR = REPO_ROOT / ".local" / "jars" / "flink" / "flink-sql-connector-kafka-5.0.0-2.2.jar"

#: Kafka brokers refuse transactions longer than ``transaction.max.timeout.ms`` (15 min by default);
#: Flink's KafkaSink asks for 1 h unless told otherwise, and then every transaction fails.
DEFAULT_TRANSACTION_TIMEOUT_MS = 10 * 60 * 1000

StateBackend = Literal["hashmap", "rocksdb"]
ExecutionMode = Literal["thread", "process"]


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


def runtime_options(
    *,
    parallelism: int = 1,
    checkpoint_interval_ms: int | None = 10_000,
    checkpoint_dir: str | Path | None = None,
    state_backend: StateBackend = "hashmap",
    execution_mode: ExecutionMode = "process",
    bundle_size: int = 1000,
    bundle_time_ms: int = 1000,
    restart_attempts: int = 3,
    restart_delay_ms: int = 5_000,
    python_executable: str | None = None,
    jars: Iterable[str | Path] = (),
    rest_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The Flink configuration (key -> string value) :func:`make_environment` applies.

    Pure (no JVM): handy for logging, tests and for writing a cluster's ``config.yaml``.
    ``checkpoint_interval_ms=None`` disables checkpointing; ``restart_attempts=0`` means no restart.
    """
    if state_backend not in ("hashmap", "rocksdb"):
        raise ValueError(f"state_backend must be 'hashmap' or 'rocksdb', not {state_backend!r}")
    if execution_mode not in ("thread", "process"):
        raise ValueError(f"execution_mode must be 'thread' or 'process', not {execution_mode!r}")
    if parallelism < 1 or bundle_size < 1 or bundle_time_ms < 1:
        raise ValueError("parallelism, bundle_size and bundle_time_ms must be >= 1")
    python = python_executable or sys.executable
    options: dict[str, str] = {
        "parallelism.default": str(parallelism),
        # The venv's interpreter, so Python workers (process mode, a cluster's TaskManagers) import
        # pyflink and Pulse's packages; python.client.executable compiles the job on submission.
        "python.executable": python,
        "python.client.executable": python,
        "python.pythonpath": worker_python_path(),
        "python.execution-mode": execution_mode,
        "python.fn-execution.bundle.size": str(bundle_size),
        "python.fn-execution.bundle.time": str(bundle_time_ms),
        "state.backend.type": state_backend,
        # Chained Java steps (message filters, key selectors) hand records on without a deep copy;
        # the Python operators convert each record on arrival and keep nothing of it.
        "pipeline.object-reuse": "true",
    }
    jar_urls = [_file_url(j) for j in jars]
    if jar_urls:
        options["pipeline.jars"] = ";".join(jar_urls)
    if checkpoint_interval_ms is not None:
        options["execution.checkpointing.interval"] = f"{checkpoint_interval_ms} ms"
        options["execution.checkpointing.mode"] = "EXACTLY_ONCE"
        options["execution.checkpointing.min-pause"] = f"{min(checkpoint_interval_ms // 2, 5000)} ms"
        # Keep the last checkpoint when the job is cancelled, so it can be restored from.
        options["execution.checkpointing.externalized-checkpoint-retention"] = "RETAIN_ON_CANCELLATION"
    if checkpoint_dir is not None:
        options["execution.checkpointing.dir"] = _file_url(checkpoint_dir)
    if state_backend == "rocksdb":
        options["execution.checkpointing.incremental"] = "true"
    if restart_attempts > 0:
        options["restart-strategy.type"] = "fixed-delay"
        options["restart-strategy.fixed-delay.attempts"] = str(restart_attempts)
        options["restart-strategy.fixed-delay.delay"] = f"{restart_delay_ms} ms"
    else:
        options["restart-strategy.type"] = "none"
    if rest_port is not None:
        # The local MiniCluster binds its REST endpoint to a random port unless told otherwise.
        options["rest.port"] = str(rest_port)
        options["rest.bind-port"] = str(rest_port)
    options.update(extra or {})
    return options


def make_environment(
    *,
    jars: Iterable[str | Path] = (KAFKA_CONNECTOR_JAR,),
    parallelism: int = 1,
    checkpoint_interval_ms: int | None = 10_000,
    checkpoint_dir: str | Path | None = None,
    state_backend: StateBackend = "hashmap",
    execution_mode: ExecutionMode = "process",
    bundle_size: int = 1000,
    bundle_time_ms: int = 1000,
    restart_attempts: int = 3,
    restart_delay_ms: int = 5_000,
    python_executable: str | None = None,
    rest_port: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> StreamExecutionEnvironment:
    """A ``StreamExecutionEnvironment`` configured the way Pulse runs (see :func:`runtime_options`).

    Without a cluster to submit to, this is a local MiniCluster inside this process's JVM
    (the py4j gateway); in ``process`` mode its Python worker then runs in *this* process
    (PyFlink's loopback server) unless ``_python_worker_execution_mode=process`` is set.
    """
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    jars = list(jars)
    missing = [str(j) for j in jars if "://" not in str(j) and not Path(j).is_file()]
    if missing:
        raise FileNotFoundError(
            f"Flink jars not found: {missing}; resolve them with `python -m infra.local.jars` (needs mvn)"
        )
    options = runtime_options(
        parallelism=parallelism,
        checkpoint_interval_ms=checkpoint_interval_ms,
        checkpoint_dir=checkpoint_dir,
        state_backend=state_backend,
        execution_mode=execution_mode,
        bundle_size=bundle_size,
        bundle_time_ms=bundle_time_ms,
        restart_attempts=restart_attempts,
        restart_delay_ms=restart_delay_ms,
        python_executable=python_executable,
        rest_port=rest_port,
        jars=jars,
        extra=extra,
    )
    jar_urls = options.pop("pipeline.jars", "")
    config = Configuration()
    for key, value in options.items():
        config.set_string(key, value)
    if options.get("execution.target") == "remote":
        env = _remote_environment(options["rest.address"], int(options["rest.port"]), config, jar_urls)
    else:
        env = StreamExecutionEnvironment.get_execution_environment(config)
    if jar_urls:
        # add_jars also puts the jars on the client's context class loader, which the Python
        # wrappers of the connector (KafkaSource.builder(), ...) need before the job is built.
        env.add_jars(*jar_urls.split(";"))
    env.set_parallelism(parallelism)
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
    starting_offsets: Literal["committed-or-earliest", "earliest", "latest"] = "committed-or-earliest",
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
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
        KafkaSource,
    )

    if starting_offsets == "committed-or-earliest":
        start = KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    elif starting_offsets == "earliest":
        start = KafkaOffsetsInitializer.earliest()
    elif starting_offsets == "latest":
        start = KafkaOffsetsInitializer.latest()
    else:
        raise ValueError(f"unknown starting_offsets {starting_offsets!r}")
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
