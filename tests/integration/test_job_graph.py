"""The job's graph as Flink builds it (no job runs): how long decoded events may wait in a network buffer.

Every edge that carries decoded events towards the user stage flushes a partly filled buffer after
``PULSE_JOB_EVENTS_BUFFER_TIMEOUT_MS``, not Flink's 100 ms: the event-time stage has several inputs
(the events read in the JVM and those the codec read), so it is not chained to them, and at the
default timeout its edge added ~40 ms to the median latency at 1,000 ev/s (ADR 0007).
"""

from __future__ import annotations

from typing import Any

import pytest

from config import Settings
from flink_jobs.launch import installed_jars, make_job_environment
from flink_jobs.pipeline import build_pipeline

pytestmark = pytest.mark.flink_job


def _stream_graph(settings: Settings) -> Any:
    env = make_job_environment(settings, installed_jars(settings))
    build_pipeline(env, settings)
    return env._j_stream_execution_environment.getStreamGraph()


def _edges_into(graph: Any, name: str) -> list[tuple[str, int]]:
    """``(source operator's name, buffer timeout ms)`` of every edge into the operators called ``name``."""
    nodes = [node for node in graph.getStreamNodes().toArray() if node.getOperatorName() == name]
    assert nodes, f"no operator {name!r} in the job's graph"
    return [(graph.getStreamNode(edge.getSourceId()).getOperatorName(), edge.getBufferTimeout())
            for node in nodes for edge in node.getInEdges()]


@pytest.mark.parametrize("timeout_ms", [5, 40])
def test_decoded_events_flush_within_the_setting_on_every_edge_to_the_user_stage(timeout_ms: int) -> None:
    settings = Settings.model_validate({"job_events_buffer_timeout_ms": timeout_ms})
    graph = _stream_graph(settings)
    into_event_time = _edges_into(graph, "event-time")
    assert {source for source, _ in into_event_time} == {"decode-in-jvm", "decode-events"}, into_event_time
    into_user_stage = _edges_into(graph, "batch")  # the user stage's batcher (chained into it) and the others'
    events_edges = [edge for edge in into_user_stage if edge[0] == "event-time-unwrap"]
    assert len(events_edges) == 1, into_user_stage
    assert [timeout for _, timeout in into_event_time + events_edges] == [timeout_ms] * 3
