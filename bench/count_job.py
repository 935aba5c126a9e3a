"""The smallest real Pulse pipeline: Kafka bytes -> EventCodec.decode -> keyBy(user) -> count in ValueState.

Used by the runtime smoke test (tests/integration/test_flink_runtime.py) and by the execution-mode
benchmark (bench/flink_runtime.py); it is the shape of the full job without the learners.

Output rows are ``(user_id, count_so_far, event_time_ms)``, one per valid input event, typed as a
Flink tuple (no pickling between operators). Undecodable records are counted (metric
``pulse_decode_failed``) and dropped here; the full job sends them to the DLQ instead.

>>> DecodeEvent().__class__.__name__, CountPerUser().__class__.__name__
('DecodeEvent', 'CountPerUser')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pyflink.common import Duration, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import FlatMapFunction, KeyedProcessFunction, RuntimeContext
from pyflink.datastream.state import ValueStateDescriptor

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, StreamExecutionEnvironment
    from pyflink.datastream.connectors.kafka import KafkaSource

DECODED_TYPE = Types.TUPLE([Types.STRING(), Types.LONG()])
COUNT_TYPE = Types.TUPLE([Types.STRING(), Types.LONG(), Types.LONG()])


class DecodeEvent(FlatMapFunction):  # type: ignore[misc]
    """Framed Avro bytes -> ``(user_id, event_time_ms)``; bad records are counted and dropped."""

    def open(self, runtime_context: RuntimeContext) -> None:
        from schemas import EventCodec  # imported in the worker: proves Pulse's packages are importable there

        self.codec = EventCodec()
        self.failed = runtime_context.get_metrics_group().counter("pulse_decode_failed")

    def flat_map(self, value: bytes) -> Iterator[tuple[str, int]]:
        from schemas import DecodeError

        try:
            event = self.codec.decode(bytes(value))
        except DecodeError:
            self.failed.inc()
            return
        yield event.user_id, event.event_time_ms


class CountPerUser(KeyedProcessFunction):  # type: ignore[misc]
    """Per-user event count in ValueState; emits ``(user_id, count, event_time_ms)`` per event."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", Types.LONG()))

    def process_element(self, value: tuple[str, int], ctx: KeyedProcessFunction.Context) -> Iterator[Any]:
        n = (self.count.value() or 0) + 1
        self.count.update(n)
        yield value[0], n, value[1]


class _EventTime(TimestampAssigner):  # type: ignore[misc]
    def extract_timestamp(self, value: tuple[str, int], record_timestamp: int) -> int:
        return int(value[1])


def build(env: StreamExecutionEnvironment, source: KafkaSource) -> DataStream:
    """Wire the pipeline onto ``env``; returns the stream of ``(user_id, count, event_time_ms)``."""
    raw = env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-events")
    decoded = raw.flat_map(DecodeEvent(), output_type=DECODED_TYPE).name("decode")
    # from_source would silently drop a Python TimestampAssigner: assign after the source.
    timed = decoded.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_seconds(5))
        .with_timestamp_assigner(_EventTime())
        .with_idleness(Duration.of_seconds(30))
    )
    return (
        timed.key_by(lambda row: row[0], key_type=Types.STRING())
        .process(CountPerUser(), output_type=COUNT_TYPE)
        .name("count-per-user")
    )
