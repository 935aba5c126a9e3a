"""v1 and v2 producers side by side on one real topic (event schema version 2, ADR 0010).

`pulse produce --event-schema 1` (an old producer) and `pulse produce --block-share 0.1` (the
default version 2, with block events) write to the same events topic; one reader decodes both.
The job's side (counting both, writing the blocks) is tested with the job.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from config import Settings
from pulse.cli import app
from schemas import EventCodec, EventType
from tests.integration.test_job import read_topic

SPEC = "synthetic:users=100,items=300"
N = 1_000


def test_v1_and_v2_producers_write_one_topic_and_both_decode(settings: Settings, tmp_path: Path) -> None:
    env = {"PULSE_HOME": str(tmp_path), "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "PULSE_TOPIC_EVENTS": settings.topic_events}
    runner = CliRunner()
    old = runner.invoke(app, ["produce", SPEC, "--limit", str(N), "--event-schema", "1", "--seed", "1"], env=env)
    new = runner.invoke(app, ["produce", SPEC, "--limit", str(N), "--block-share", "0.1", "--seed", "2"], env=env)
    assert old.exit_code == 0 and new.exit_code == 0, (old.output, new.output)
    assert f"produced {N}, failed 0" in old.stdout and f"produced {N}, failed 0" in new.stdout

    values = read_topic(settings, settings.topic_events, 2 * N)
    assert len(values) == 2 * N
    codec = EventCodec()
    by_id: Counter[int] = Counter()
    blocks_by_id: Counter[int] = Counter()
    for value in values:
        schema_id = int.from_bytes(value[1:5], "big")
        event = codec.decode(value)  # both versions into the newest: no DecodeError
        by_id[schema_id] += 1
        blocks_by_id[schema_id] += event.type is EventType.BLOCK
    assert by_id == {1: N, 5: N}
    assert blocks_by_id[1] == 0 and 0.05 * N < blocks_by_id[5] < 0.15 * N
    print(f"\n{by_id[1]} v1 + {by_id[5]} v2 events ({blocks_by_id[5]} blocks) decoded from one topic")


def test_a_v1_producer_stops_at_a_block_event_with_one_clear_line(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"event_id": "a", "type": "view", "user_id": "u1", "item_id": "i1", "event_time_ms": 1700000000000}\n'
        '{"event_id": "b", "type": "block", "user_id": "u1", "category": "shoes", "event_time_ms": 1700000000001}\n'
    )
    env = {"PULSE_HOME": str(tmp_path), "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "PULSE_TOPIC_EVENTS": settings.topic_events}
    result = CliRunner().invoke(app, ["produce", f"jsonl:{path}", "--event-schema", "1"], env=env)
    assert result.exit_code == 2, result.output
    assert "event b: version 1 of the events schema (id 1) has no event type 'block'" in result.stderr
    assert "after 1 events produced" in result.stderr
    assert [EventCodec().decode(v).event_id for v in read_topic(settings, settings.topic_events, 1)] == ["a"]
