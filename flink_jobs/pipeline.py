"""The Pulse job: Kafka -> decode (DLQ) -> event time -> per-user state + learners -> shared state -> Redis.

``build_pipeline(env, settings)`` wires the graph and nothing else, so tests and the CLI can
run it on any environment; ``run(settings)`` builds the environment and executes it.
Every operator has a stable ``uid`` so savepoints survive changes to the graph around it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pyflink.common import Duration, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from config import Settings
from flink_jobs.decode import DEAD_LETTERS, DECODED, DecodeEvents
from flink_jobs.redis_output import RedisOutput
from flink_jobs.redis_sink import RedisWriter
from flink_jobs.routing import (
    CLOSED_SESSION,
    ITEM_SNAPSHOT,
    MESSAGE,
    TO_BANDITS,
    TO_ITEMS,
    TO_MODEL,
    TO_POPULARITY,
    TO_REDIS,
    keyed_messages,
    keyed_rows,
    raw_bytes_of,
)
from flink_jobs.runtime import kafka_sink, kafka_source, make_environment
from flink_jobs.shared_state import (
    BanditArms,
    ItemParamsOwner,
    ModelMetadata,
    SegmentPopularity,
    SharedStageConfig,
)
from flink_jobs.user_state import ITEM_PARAMS, UserStageConfig, UserState
from infra.local.jars import ensure_jars
from online_models.bandits import BanditScope
from online_models.mf import MFConfig
from schemas import DeadLetterCodec, Limits
from schemas.redis_keys import RedisKeys

log = logging.getLogger(__name__)


def build_pipeline(env: StreamExecutionEnvironment, settings: Settings, *, bounded: bool = False) -> None:
    """Wire the whole job onto ``env``."""
    raw = read_events(env, settings, bounded)
    decoded = decode(raw, settings)
    write_dead_letters(decoded, settings)
    events = with_event_time(decoded, settings)
    item_snapshots = read_item_snapshots(env, settings, bounded)
    users = per_user_state(events, item_snapshots, settings)
    write_closed_sessions(users, settings)
    shared = shared_state(users, settings)
    write_item_snapshots(shared[0], settings)
    write_redis(users.union(*shared), settings)


def read_events(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> DataStream:
    """Raw framed-Avro values from the events topic, each after its partition and offset (for the DLQ)."""
    source = kafka_source(settings.kafka_bootstrap, settings.topic_events, settings.job_group_id, bounded=bounded,
                          with_position=True)
    # No watermarks here: they need the decoded event's time (with_event_time).
    return env.from_source(source, WatermarkStrategy.no_watermarks(), "events").uid("source-events")


def decode(raw: DataStream, settings: Settings) -> DataStream:
    """Bytes -> ``(Row(user_id, Event), event time)``; anything else goes to the dead-letter side output."""
    decoder = DecodeEvents(settings.topic_events, settings.schema_registry_url, Limits())
    return raw.process(decoder, output_type=DECODED).name("decode").uid("decode")


def write_dead_letters(decoded: DataStream, settings: Settings) -> None:
    """Dead letters to the DLQ topic, exactly once (original bytes, reason, source partition/offset)."""
    sink = kafka_sink(settings.kafka_bootstrap, settings.topic_dlq, exactly_once=True,
                      transactional_id_prefix=f"{settings.job_name}-dlq",
                      properties={"max.request.size": str(DeadLetterCodec.MAX_BYTES + 64 * 1024)})
    decoded.get_side_output(DEAD_LETTERS).sink_to(sink).name("dead-letters").uid("sink-dead-letters")


def with_event_time(decoded: DataStream, settings: Settings) -> DataStream:
    """Event-time watermarks with bounded out-of-orderness; idle partitions do not hold them back.

    Decode puts each event's time beside it, so the time is read and the pair unwrapped in the JVM
    (PyFlink's own classes for this): a Python ``TimestampAssigner`` would be one more Python step
    per event, and so would ``key_by(python_function)`` after it. Out: ``Row(user_id, Event)``.
    """
    jvm = get_gateway().jvm
    eventtime = jvm.org.apache.flink.streaming.api.functions.python.eventtime
    strategy = (
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(settings.watermark_out_of_orderness_ms))
        .with_idleness(Duration.of_millis(settings.source_idleness_ms))
    )
    j_timed = decoded._j_data_stream.assignTimestampsAndWatermarks(
        strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner())
    )
    timed = DataStream(j_timed).name("event-time").uid("event-time")
    j_events = timed._j_data_stream.map(eventtime.RemoveTimestampMapFunction(),
                                        DECODED.get_field_types()[0].get_java_type_info())
    return DataStream(j_events).name("event-time-unwrap").uid("event-time-unwrap")


def read_item_snapshots(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> DataStream:
    """The item owner's parameter snapshots, fed back to the user side (the loop closes through Kafka)."""
    source = kafka_source(settings.kafka_bootstrap, settings.topic_item_params, f"{settings.job_group_id}-items",
                          bounded=bounded)
    return env.from_source(source, WatermarkStrategy.no_watermarks(), "item-snapshots").uid("source-item-snapshots")


def write_item_snapshots(items: DataStream, settings: Settings) -> None:
    """Snapshots are whole values keyed by item version: at-least-once is enough (replays are ignored)."""
    sink = kafka_sink(settings.kafka_bootstrap, settings.topic_item_params, exactly_once=False)
    raw_bytes_of(items, ITEM_SNAPSHOT).sink_to(sink).name("item-snapshots").uid("sink-item-snapshots")


def per_user_state(events: DataStream, item_snapshots: DataStream, settings: Settings) -> DataStream:
    """keyBy(user): session, counts, user factors, impression->reward join; every output a message row."""
    config = UserStageConfig(
        mf=mf_config(settings),
        keys=RedisKeys(settings.redis_prefix),
        scopes=tuple(BanditScope(scope) for scope in settings.bandit_scopes),
        session_gap_ms=settings.session_gap_ms,
        impression_ttl_ms=settings.impression_ttl_ms,
        top_k=settings.top_k,
        score_refresh_ms=settings.score_refresh_ms,
        redis_shards=redis_shards(settings),
    )
    return (
        keyed_rows(events)
        .connect(item_snapshots.broadcast(ITEM_PARAMS))
        .process(UserState(config), output_type=MESSAGE)
        .name("user-state")
        .uid("user-state")
    )


def write_closed_sessions(users: DataStream, settings: Settings) -> None:
    """Closed-session summaries (JSON) to the sessions topic, exactly once."""
    sink = kafka_sink(settings.kafka_bootstrap, settings.topic_sessions, exactly_once=True,
                      transactional_id_prefix=f"{settings.job_name}-sessions")
    raw_bytes_of(users, CLOSED_SESSION).sink_to(sink).name("closed-sessions").uid("sink-closed-sessions")


def shared_state(users: DataStream, settings: Settings) -> list[DataStream]:
    """Item parameters and counts, bandit arms, segment popularity and model metadata, each keyed by its owner."""
    config = SharedStageConfig(
        keys=RedisKeys(settings.redis_prefix),
        mf=mf_config(settings),
        bandit_policy=settings.bandit_policy,
        refresh_ms=settings.shared_refresh_ms,
        popularity_refresh_ms=settings.popularity_refresh_ms,
        model_version=settings.model_version,
        redis_shards=redis_shards(settings),
    )
    items = (keyed_messages(users, TO_ITEMS)
             .process(ItemParamsOwner(config), output_type=MESSAGE).name("item-params").uid("item-params"))
    bandits = (keyed_messages(users, TO_BANDITS)
               .process(BanditArms(config), output_type=MESSAGE).name("bandit-arms").uid("bandit-arms"))
    popularity = (keyed_messages(items, TO_POPULARITY)
                  .process(SegmentPopularity(config), output_type=MESSAGE).name("popularity").uid("popularity"))
    model = (keyed_messages(users, TO_MODEL)
             .process(ModelMetadata(config), output_type=MESSAGE).name("model-metadata").uid("model-metadata"))
    return [items, bandits, popularity, model]


def write_redis(messages: DataStream, settings: Settings) -> None:
    """Every Redis write, keyed by shard (by its sender) so each shard flushes one pipeline at a time."""
    writer = RedisWriter(
        RedisKeys(settings.redis_prefix), settings.model_version,
        url=settings.redis_url, password=settings.redis_password,
    )
    (keyed_messages(messages, TO_REDIS)
     .process(RedisOutput(writer, settings.redis_flush_ms)).name("redis").uid("sink-redis"))


def redis_shards(settings: Settings) -> int:
    """Keys of the Redis sink stage: a few per subtask, so flushes are spread over time."""
    return 4 * settings.job_parallelism


def mf_config(settings: Settings) -> MFConfig:
    """The MF hyperparameters of the job (``pulse eval mf`` takes the same ones as flags)."""
    return MFConfig(
        n_factors=settings.mf_factors,
        bias_lr=settings.mf_learning_rate,
        latent_lr=settings.mf_learning_rate,
        l2_bias=settings.mf_l2,
        l2_latent=settings.mf_l2,
        seed=settings.mf_seed,
    )


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` folder with ``_metadata``) under ``checkpoint_dir``."""
    done = [meta.parent for meta in checkpoint_dir.glob("*/chk-*/_metadata")]
    return max(done, key=lambda p: p.stat().st_mtime) if done else None


def make_job_environment(
    settings: Settings, restore_from: Path | None = None, *, jobmanager: str | None = None
) -> StreamExecutionEnvironment:
    """The execution environment of the job as the settings describe it.

    ``jobmanager`` (``host:port`` of a cluster's REST API) makes it submit there instead of
    running a MiniCluster in this process.
    """
    extra = {"execution.state-recovery.path": restore_from.as_uri()} if restore_from else {}
    if jobmanager:
        host, _, port = jobmanager.rpartition(":")
        # A cluster's own config.yaml sets its metrics reporter; the job only says where to go.
        extra |= {"execution.target": "remote", "rest.address": host or "127.0.0.1", "rest.port": port}
    elif settings.metrics_port:
        # Flink's Prometheus reporter: every job metric (Python counters and gauges included) on
        # http://<host>:<metrics_port>/metrics. The MiniCluster only finds the reporter jar on the
        # JVM's classpath (run() puts it there); a standalone cluster loads it from plugins/.
        extra["metrics.reporter.prom.factory.class"] = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        extra["metrics.reporter.prom.port"] = str(settings.metrics_port)
    return make_environment(
        jars=ensure_jars(settings.home, "flink"),  # also rebuilds the job's Java classes after a change
        parallelism=settings.job_parallelism,
        checkpoint_interval_ms=settings.checkpoint_interval_ms,
        checkpoint_dir=settings.checkpoint_path(),
        state_backend=settings.state_backend,
        execution_mode=settings.python_execution_mode,
        bundle_size=settings.bundle_size,
        bundle_time_ms=settings.bundle_time_ms,
        restart_attempts=settings.restart_attempts,
        extra=extra,
    )


def run(settings: Settings, *, restore_from: Path | None = None, bounded: bool = False) -> None:
    """Build and execute the job (blocks until it ends or is cancelled)."""
    # Flink writes its own logs (task failures, restarts) here instead of inside the virtualenv.
    flink_logs = settings.home / "logs" / "flink"
    flink_logs.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(flink_logs))
    if settings.metrics_port:
        # The local MiniCluster ignores pyflink/plugins/; the reporter jar must be on the gateway
        # JVM's classpath, which pyflink builds from HADOOP_CLASSPATH when it starts the JVM (below).
        import pyflink

        pyflink_home = Path(pyflink.__file__).parent
        reporter_jars = [str(j) for folder in ("plugins", "opt")
                         for j in sorted(pyflink_home.glob(f"{folder}/**/flink-metrics-prometheus-*.jar"))][:1]
        if reporter_jars:
            current = os.environ.get("HADOOP_CLASSPATH", "")
            if reporter_jars[0] not in current.split(os.pathsep):
                os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(p for p in (current, reporter_jars[0]) if p)
        else:
            log.warning("flink-metrics-prometheus jar not found under %s; no Prometheus metrics", pyflink_home)
    env = make_job_environment(settings, restore_from)
    build_pipeline(env, settings, bounded=bounded)
    log.info("running %s (parallelism %d)%s", settings.job_name, settings.job_parallelism,
             f", restored from {restore_from}" if restore_from else "")
    env.execute(settings.job_name)


def submit(settings: Settings, jobmanager: str, *, restore_from: Path | None = None) -> str:
    """Submit the job to the standalone cluster at ``jobmanager`` (REST ``host:port``); its job id.

    The job is compiled here and runs on the cluster's TaskManagers, which must see the same
    virtualenv and repository paths (``python.pythonpath``): true for ``pulse up --flink``.
    """
    env = make_job_environment(settings, restore_from, jobmanager=jobmanager)
    build_pipeline(env, settings)
    client = env.execute_async(settings.job_name)
    job_id = str(client.get_job_id())
    log.info("submitted %s to %s as %s (parallelism %d)%s", settings.job_name, jobmanager, job_id,
             settings.job_parallelism, f", restored from {restore_from}" if restore_from else "")
    return job_id


def main() -> None:
    """``python -m flink_jobs.pipeline``: the job, settings from ``PULSE_*`` only.

    For ``flink run -pym flink_jobs.pipeline`` and container entry points; resumes from the latest
    retained checkpoint. ``pulse job run`` is the same with flags.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    run(settings, restore_from=latest_checkpoint(settings.checkpoint_path()))


if __name__ == "__main__":
    main()
