"""The Pulse job: Kafka -> decode (DLQ) -> event time -> per-user state + learners -> shared state -> Redis.

The catalogue (the items topic) goes to Redis beside it, through the same sink and DLQ.

``build_pipeline(env, settings)`` wires the graph and nothing else (one function per stage), so
it can be built on any environment; ``flink_jobs.launch`` makes the environment and runs it.
Every operator has a stable ``uid`` so savepoints survive changes to the graph around it.
"""

from __future__ import annotations

from typing import Any

from pyflink.common import Duration, WatermarkStrategy
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.java_gateway import get_gateway

from config import Settings
from flink_jobs.batching import PACKED, batched, raw_batches, unpacked, unpacked_events, user_batches
from flink_jobs.catalogue import DecodeCatalogue
from flink_jobs.decode import DEAD_LETTER_COUNTS, DEAD_LETTERS, DECODED, DecodeEvents, DecodeServed
from flink_jobs.redis_sink import RedisSink
from flink_jobs.redis_writer import RedisWriter
from flink_jobs.routing import (
    CLOSED_SESSION,
    ITEM_SNAPSHOT,
    TO_BANDITS,
    TO_EXPERIMENTS,
    TO_ITEMS,
    TO_MODEL,
    TO_POPULARITY,
    TO_REDIS,
    keyed_messages,
    keyed_rows,
    raw_bytes_of,
)
from flink_jobs.runtime import kafka_sink, kafka_source
from flink_jobs.shared_state import (
    BanditArms,
    ExperimentResults,
    ItemParamsOwner,
    ModelMetadata,
    SegmentPopularity,
    SharedStageConfig,
)
from flink_jobs.user_state import UserStageConfig, UserState
from flink_jobs.user_steps import DriftReaction
from online_models.bandits import BanditScope
from online_models.implicit_params import implicit_config, item_shape
from online_models.mf_params import MFConfig, mf_config
from schemas import DeadLetterCodec, Limits, load_registry
from schemas.codec import jvm_event_schema_ids
from schemas.redis_keys import RedisKeys


def build_pipeline(env: StreamExecutionEnvironment, settings: Settings, *, bounded: bool = False) -> None:
    """Wire the whole job onto ``env``."""
    raw = read_events(env, settings, bounded)
    read_in_jvm = decode_in_jvm(raw, settings)
    decoded = decode(undecided(read_in_jvm), settings)
    catalogue = decode_catalogue(read_catalogue(env, settings, bounded), settings)
    # Served lists only when outcomes are credited to the variants of a recommendations experiment.
    served = [decode_served(read_served(env, settings, bounded), settings)] if settings.attribution_reads_served else []
    write_dead_letters([decoded, catalogue, *served], settings)
    decoded_events = unpacked_events(decoded, DECODED).name("decode-events").uid("decode-events")
    events = with_event_time(flushed_union([read_in_jvm, decoded_events, *map(served_lists, served)], settings),
                             settings)
    item_snapshots = read_item_snapshots(env, settings, bounded)
    users = per_user_state(events, item_snapshots, settings)
    write_closed_sessions(users, settings)
    shared = shared_state(users.union(dead_letter_counts([decoded, catalogue, *served])), settings)
    write_item_snapshots(shared[0], settings)
    write_redis(shared[0].union(*shared[1:], catalogue_writes(catalogue)), settings)


def read_events(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> DataStream:
    """Raw framed-Avro values from the events topic, each after its partition and offset (for the DLQ)."""
    source = kafka_source(settings.kafka_bootstrap, settings.topic_events, settings.job_group_id, bounded=bounded,
                          with_position=True, properties=settings.kafka_java_properties())
    # No watermarks here: they need the decoded event's time (with_event_time).
    return env.from_source(source, WatermarkStrategy.no_watermarks(), "events").uid("source-events")


def decode_in_jvm(raw: DataStream, settings: Settings) -> DataStream:
    """Bytes -> ``(Row(user_id, event fields), event time)`` in the JVM, chained to the source.

    Only for the events the codec accepts without a doubt (``EventFrames.java``); every other record goes
    on to :func:`decode` (side output :func:`undecided`). The JVM reads only the schema ids whose schema
    is the project's version 1 or 2 (with a Schema Registry, its ids for them);
    ``PULSE_JOB_DECODE_IN_JVM=false`` leaves every record to the codec.
    """
    limits = Limits()
    ids = jvm_event_schema_ids(load_registry(settings.schema_registry_url)) if settings.job_decode_in_jvm else {}
    decoder = get_gateway().jvm.pulse.flink.EventDecoder(
        ",".join(f"{schema_id}:{version}" for schema_id, version in ids.items()), limits.max_bytes,
        limits.max_id_length, limits.min_event_time_ms, limits.max_future_ms)
    j_decoded = raw._j_data_stream.process(decoder, DECODED.get_java_type_info())
    return DataStream(j_decoded.name("decode-in-jvm").uid("decode-in-jvm"))


def undecided(read_in_jvm: DataStream) -> DataStream:
    """The records the JVM left to the codec (bad input, other schema ids), as read: position first."""
    return DataStream(read_in_jvm._j_data_stream.getSideOutput(get_gateway().jvm.pulse.flink.EventDecoder.UNDECIDED))


def decode(raw: DataStream, settings: Settings) -> DataStream:
    """Bytes -> ``(Row(user_id, Event), event time)`` by the codec, the one validation truth.

    Anything it refuses goes to the dead-letter side output with its reason.
    """
    batches = raw_batches(raw, max_records=settings.job_batch_max_events, max_delay_ms=settings.job_batch_max_ms,
                          uid="decode-batches")
    decoder = DecodeEvents(settings.topic_events, settings.schema_registry_url, Limits())
    return batches.process(decoder, output_type=PACKED).name("decode").uid("decode")


def read_catalogue(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> DataStream:
    """Raw framed-Avro catalogue entries from the compacted items topic, each after its position."""
    return positioned_source(env, settings, settings.topic_items, "catalogue", bounded)


def decode_catalogue(raw: DataStream, settings: Settings) -> DataStream:
    """Bytes -> Redis writes of the catalogue (entry + indexes serving filters on); bad entries to the DLQ."""
    batches = raw_batches(raw, max_records=settings.job_batch_max_events, max_delay_ms=settings.job_batch_max_ms,
                          uid="catalogue-batches")
    decoder = DecodeCatalogue(settings.topic_items, settings.schema_registry_url, RedisKeys(settings.redis_prefix),
                              redis_shards(settings))
    return batches.process(decoder, output_type=PACKED).name("catalogue").uid("catalogue")


def catalogue_writes(catalogue: DataStream) -> DataStream:
    """The catalogue's Redis writes as message rows for the Redis sink."""
    return unpacked(catalogue).name("catalogue-messages").uid("catalogue-messages")


def read_served(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> DataStream:
    """Raw framed-Avro served lists (``served.avsc``) serving logged, each after its position."""
    return positioned_source(env, settings, settings.topic_served, "served", bounded)


def positioned_source(env: StreamExecutionEnvironment, settings: Settings, topic: str, name: str,
                      bounded: bool) -> DataStream:
    """A topic's raw values, each after its partition and offset, under its own consumer group (``-<name>``)."""
    source = kafka_source(settings.kafka_bootstrap, topic, f"{settings.job_group_id}-{name}", bounded=bounded,
                          with_position=True, properties=settings.kafka_java_properties())
    return env.from_source(source, WatermarkStrategy.no_watermarks(), name).uid(f"source-{name}")


def decode_served(raw: DataStream, settings: Settings) -> DataStream:
    """Bytes -> the lists served under an experiment, as ``(Row(user_id, ServedList), 0)``; bad ones to the DLQ."""
    batches = raw_batches(raw, max_records=settings.job_batch_max_events, max_delay_ms=settings.job_batch_max_ms,
                          uid="served-batches")
    decoder = DecodeServed(settings.topic_served, settings.schema_registry_url)
    return batches.process(decoder, output_type=PACKED).name("decode-served").uid("decode-served")


def served_lists(decoded: DataStream) -> DataStream:
    """The decoded lists, unpacked in the JVM beside the events (the user stage credits their outcomes)."""
    return unpacked_events(decoded, DECODED).name("served-lists").uid("served-lists")


def write_dead_letters(decoders: list[DataStream], settings: Settings) -> None:
    """Dead letters of events and catalogue entries to the DLQ topic, exactly once (with reason and position)."""
    sink = kafka_sink(settings.kafka_bootstrap, settings.topic_dlq, exactly_once=True,
                      transactional_id_prefix=f"{settings.job_name}-dlq",
                      properties={"max.request.size": str(DeadLetterCodec.MAX_BYTES + 64 * 1024),
                                  **settings.kafka_java_properties()})
    events, *others = (decoder.get_side_output(DEAD_LETTERS) for decoder in decoders)
    events.union(*others).sink_to(sink).name("dead-letters").uid("sink-dead-letters")


def dead_letter_counts(decoders: list[DataStream]) -> DataStream:
    """Each decode batch's dead letters by reason, as a message for the model stage (``model:dlq`` in Redis)."""
    events, *others = (decoder.get_side_output(DEAD_LETTER_COUNTS) for decoder in decoders)
    return unpacked(events.union(*others)).name("dead-letter-counts").uid("dead-letter-counts")


def flushed_union(streams: list[DataStream], settings: Settings) -> DataStream:
    """The streams as one, each sending a partly filled network buffer after ``job_events_buffer_timeout_ms``.

    An operator with several inputs is not chained to them, so the union's inputs reach it over
    network edges; at Flink's default buffer timeout (100 ms) the events read in the JVM waited
    ~40 ms more for the event-time stage at 1,000 ev/s (p50; bench/pipeline.py, ADR 0007).
    """
    first, *others = (stream.set_buffer_timeout(settings.job_events_buffer_timeout_ms) for stream in streams)
    return first.union(*others) if others else first


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
    # Flink sends a partly filled network buffer after 100 ms by default; a decode batch's events
    # should not wait that long for the user stage (this edge only: ADR 0007).
    j_events.setBufferTimeout(settings.job_events_buffer_timeout_ms)
    return DataStream(j_events).name("event-time-unwrap").uid("event-time-unwrap")


def read_item_snapshots(env: StreamExecutionEnvironment, settings: Settings, bounded: bool) -> DataStream:
    """The item owner's parameter snapshots, fed back to the user side (the loop closes through Kafka)."""
    source = kafka_source(settings.kafka_bootstrap, settings.topic_item_params, f"{settings.job_group_id}-items",
                          bounded=bounded, properties=settings.kafka_java_properties())
    # Snapshots carry no event time: their watermark is the end of time, so the user stage's event time
    # (and its session and impression timers) follows the events alone (`NoEventTime.java`).
    no_event_time = WatermarkStrategy(get_gateway().jvm.pulse.flink.NoEventTime())
    return env.from_source(source, no_event_time, "item-snapshots").uid("source-item-snapshots")


def write_item_snapshots(items: DataStream, settings: Settings) -> None:
    """Snapshots are whole values keyed by item version: at-least-once is enough (replays are ignored)."""
    sink = kafka_sink(settings.kafka_bootstrap, settings.topic_item_params, exactly_once=False,
                      properties=settings.kafka_java_properties())
    raw_bytes_of(items, ITEM_SNAPSHOT).sink_to(sink).name("item-snapshots").uid("sink-item-snapshots")


def learner_shape(settings: Settings) -> MFConfig:
    """The MF config the users' and items' parameters are drawn by: MF's, or the implicit learner's shape."""
    return mf_config(settings) if settings.mf_learner == "explicit" else item_shape(implicit_config(settings))


def per_user_state(events: DataStream, item_snapshots: DataStream, settings: Settings) -> DataStream:
    """keyBy(user): session, counts, user factors, impression->reward join; every output a message row."""
    implicit = implicit_config(settings) if settings.mf_learner != "explicit" else None
    config = UserStageConfig(
        mf=learner_shape(settings),
        keys=RedisKeys(settings.redis_prefix),
        scopes=tuple(BanditScope(scope) for scope in settings.bandit_scopes),
        session_gap_ms=settings.session_gap_ms,
        impression_ttl_ms=settings.impression_ttl_ms,
        top_k=settings.top_k,
        score_refresh_ms=settings.score_refresh_ms,
        redis_shards=redis_shards(settings),
        value_format=settings.redis_value_format,
        user_ttl_ms=settings.redis_user_ttl_s * 1000,
        drift=DriftReaction(settings.drift_reaction, settings.drift_boost_factor, settings.drift_boost_events),
        attribution=settings.attribution_on,
        attribution_window_ms=settings.attribution_window_ms,
        bandit_context=settings.bandit_features if settings.bandit_policy == "linucb" else (),
        implicit=implicit,
        ranking_k=settings.ranking_k,
    )
    # The item snapshots travel inside the batches: one input, so the batcher is chained into the stage.
    batches = user_batches(keyed_rows(events), item_snapshots, max_records=settings.job_batch_max_events,
                           max_delay_ms=settings.job_batch_max_ms, tick_ms=max(1, settings.score_refresh_ms // 2),
                           uid="user-batches")
    packed = (
        batches
        .process(UserState(config, redis_writer(settings), settings.redis_flush_ms,
                           write_back_per_batch=settings.job_write_back_per_batch,
                           write_back_quiet_ms=settings.job_write_back_quiet_ms,
                           gc_every_ms=settings.job_gc_every_ms), output_type=PACKED)
        .name("user-state")
        .uid("user-state")
    )
    return unpacked(packed).name("user-messages").uid("user-messages")


def write_closed_sessions(users: DataStream, settings: Settings) -> None:
    """Closed-session summaries (JSON) to the sessions topic, exactly once."""
    sink = kafka_sink(settings.kafka_bootstrap, settings.topic_sessions, exactly_once=True,
                      transactional_id_prefix=f"{settings.job_name}-sessions",
                      properties=settings.kafka_java_properties())
    # Not chained into the user stage: a Kafka transaction's commit and the next one's start block
    # their task's thread at every checkpoint.
    summaries = raw_bytes_of(users, CLOSED_SESSION).start_new_chain()
    summaries.sink_to(sink).name("closed-sessions").uid("sink-closed-sessions")


def shared_state(users: DataStream, settings: Settings) -> list[DataStream]:
    """Item parameters and counts, bandit arms, segment popularity and model metadata, each keyed by its owner."""
    config = SharedStageConfig(
        keys=RedisKeys(settings.redis_prefix),
        mf=learner_shape(settings),
        learner=settings.mf_learner,
        ranking_k=settings.ranking_k,
        write_back_per_batch=settings.job_write_back_per_batch,
        write_back_quiet_ms=settings.job_write_back_quiet_ms,
        bandit_policy=settings.bandit_policy,
        refresh_ms=settings.shared_refresh_ms,
        popularity_refresh_ms=settings.popularity_refresh_ms,
        model_version=settings.model_version,
        redis_shards=redis_shards(settings),
        value_format=settings.redis_value_format,
        attribution_window_ms=settings.attribution_window_ms,
        bandit_hyperparameters=(("alpha", settings.bandit_alpha), ("features", settings.bandit_features))
        if settings.bandit_policy == "linucb" else (),
    )
    items = _batched_stage(users, TO_ITEMS, ItemParamsOwner(config), "item-params", settings)
    bandits = _batched_stage(users, TO_BANDITS, BanditArms(config), "bandit-arms", settings)
    popularity = _batched_stage(items, TO_POPULARITY, SegmentPopularity(config), "popularity", settings)
    model = _batched_stage(users, TO_MODEL, ModelMetadata(config), "model-metadata", settings)
    if not settings.attribution_on:
        return [items, bandits, popularity, model]
    experiments = _batched_stage(users, TO_EXPERIMENTS, ExperimentResults(config), "experiment-results", settings)
    return [items, bandits, popularity, model, experiments]


def write_redis(messages: DataStream, settings: Settings) -> None:
    """The shared stages' Redis writes, keyed by shard (by sender) so each shard flushes one pipeline at a time.

    The user stage writes its users' keys itself (``flink_jobs/redis_outbox.py``).
    """
    batches = batched(keyed_messages(messages, TO_REDIS), max_records=settings.job_batch_max_events,
                      max_delay_ms=settings.job_batch_max_ms, tick_ms=settings.redis_flush_ms, uid="redis-batches")
    batches.process(RedisSink(redis_writer(settings), settings.redis_flush_ms)).name("redis").uid("sink-redis")


def redis_writer(settings: Settings) -> RedisWriter:
    """A writer for a stage that writes Redis (each subtask opens its own connection)."""
    return RedisWriter(RedisKeys(settings.redis_prefix), settings.model_version,
                       url=settings.redis_url, password=settings.redis_password,
                       connection_options=settings.redis_tls_kwargs(settings.redis_url))


def _batched_stage(messages: DataStream, kind: str, stage: Any, uid: str, settings: Settings) -> DataStream:
    """The messages of ``kind`` through ``stage`` one micro-batch per call; its messages as rows again.

    A batch every tenth of ``shared_refresh_ms`` (100 ms by default), not every ``job_batch_max_ms``:
    these stages write and share their values at most every ``shared_refresh_ms``, so shorter batches
    would only cost Python calls, which every Python stage of the TaskManager waits for.
    """
    window_ms = max(settings.job_batch_max_ms, settings.shared_refresh_ms // 10)
    batches = batched(keyed_messages(messages, kind), max_records=settings.job_batch_max_events,
                      max_delay_ms=window_ms, tick_ms=window_ms, uid=f"{uid}-batches")
    packed = batches.process(stage, output_type=PACKED).name(uid).uid(uid)
    return unpacked(packed).name(f"{uid}-messages").uid(f"{uid}-messages")


def redis_shards(settings: Settings) -> int:
    """Keys of the Redis sink stage: a few per subtask, so flushes are spread over time."""
    return 4 * settings.job_parallelism
