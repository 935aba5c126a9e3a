"""PyFlink runtime smoke test: real Kafka in, a real (MiniCluster) Flink job, real Kafka out.

5,000 synthetic framed-Avro events -> bounded KafkaSource (raw bytes) -> EventCodec.decode in a
Python FlatMapFunction -> keyBy(user_id) -> count in ValueState (KeyedProcessFunction) ->
exactly-once KafkaSink. The counts read back with ``isolation.level=read_committed`` must equal
the input counts per user exactly, in both Python execution modes.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer

from bench import count_job
from config import REPO_ROOT, Settings
from flink_jobs.runtime import RuntimeOptions, kafka_sink, kafka_source, make_environment
from infra.local.jars import jar_dir
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics

N_EVENTS = 5_000

#: The shaded Kafka connector where `infra/setup.sh` puts it (the only jar the count job needs).
KAFKA_CONNECTOR_JAR = jar_dir(REPO_ROOT / ".local", "flink") / "flink-sql-connector-kafka-5.0.0-2.2.jar"

pytestmark = pytest.mark.flink_job


@pytest.fixture(scope="module", autouse=True)
def kafka_connector_jar() -> Path:
    """`make test` puts the jar there; a missing one fails the tests rather than skipping them."""
    assert KAFKA_CONNECTOR_JAR.is_file(), f"{KAFKA_CONNECTOR_JAR} missing: run `python -m infra.local.jars` (needs mvn)"
    return KAFKA_CONNECTOR_JAR


@pytest.fixture(scope="module", autouse=True)
def flink_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the PyFlink gateway's log out of the shared venv (pyflink/log/), where runs clobber each other."""
    log_dir = Path(os.environ.get("FLINK_LOG_DIR") or tmp_path_factory.mktemp("flink-log"))
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))
    return log_dir


def _produce(settings: Settings) -> Counter[str]:
    expected: Counter[str] = Counter()
    with EventProducer(settings) as producer:
        for event in open_source("synthetic", seed=1, limit=N_EVENTS):
            producer.send(event)
            expected[event.user_id] += 1
    assert producer.report.produced == N_EVENTS and producer.report.ok, producer.report
    return expected


def _read_committed(bootstrap: str, topic: str, want: int, timeout_s: float = 30.0) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(values) < want and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                assert message.error() is None, message.error()
                values.append(message.value())
        # A little longer: more rows than expected would mean duplicates.
        values.extend(m.value() for m in consumer.consume(1000, 1.0) if m.error() is None)
    finally:
        consumer.close()
    return values


# In process mode the job's Python worker runs in this process (Beam's loopback worker); when the job
# ends, the runner hangs up the data channel and Beam's reader thread dies with gRPC's CANCELLED
# ("Multiplexer hanging up"): the end of the stream, not an error of the job, whose output is checked.
@pytest.mark.filterwarnings(
    "ignore:Exception in thread read_grpc_client_inputs:pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("execution_mode", ["thread", "process"])
def test_keyed_count_job_counts_every_event_once(
    kafka_bootstrap: str, execution_mode: str, tmp_path: Path, flink_log_dir: Path
) -> None:
    from pyflink.common import Types

    suffix = uuid.uuid4().hex[:8]
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_events=f"flink-in-{suffix}")
    out_topic = f"flink-out-{suffix}"
    ensure_topics(settings, [settings.topic_events, out_topic])
    expected = _produce(settings)

    env = make_environment(RuntimeOptions(
        jars=(KAFKA_CONNECTOR_JAR,),
        parallelism=1,
        execution_mode=execution_mode,  # type: ignore[arg-type]
        checkpoint_interval_ms=1_000,  # the exactly-once sink commits on checkpoints
        checkpoint_dir=tmp_path / "checkpoints",
        restart_attempts=0,  # a failure here should fail the test, not be retried
    ))
    counts = count_job.build(
        env, kafka_source(kafka_bootstrap, settings.topic_events, f"flink-test-{suffix}", bounded=True)
    )
    counts.map(lambda row: f"{row[0]},{row[1]}".encode(), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())).sink_to(
        kafka_sink(kafka_bootstrap, out_topic, exactly_once=True, transactional_id_prefix=f"test-{suffix}")
    )
    # execute() returns once the bounded job has finished, including its final checkpoint, which
    # commits the last Kafka transaction. (execute_and_collect would cancel the job when the
    # iterator is closed, before that commit: nothing committed would be read back.)
    env.execute(f"flink-runtime-smoke-{execution_mode}")

    rows = _read_committed(kafka_bootstrap, out_topic, want=N_EVENTS)
    assert len(rows) == N_EVENTS, f"{len(rows)} rows read back; Flink logs in {flink_log_dir}"
    final: dict[str, int] = {}
    seen: Counter[str] = Counter()
    for row in rows:
        user, count = row.decode().split(",")
        final[user] = max(final.get(user, 0), int(count))
        seen[user] += 1
    assert final == dict(expected)
    assert seen == expected  # every event produced exactly one update: nothing lost or duplicated
