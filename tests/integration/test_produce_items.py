"""`pulse produce --topic items`: the catalogue reaches the compacted items topic on the real broker.

The real CLI runs as a subprocess against the test session's Kafka, on a topic of this test alone.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from typer.testing import CliRunner

from config import REPO_ROOT, Settings
from producers.catalogue import synthetic_catalogue
from producers.producer import ItemProducer
from producers.sources import parse_synthetic_overrides
from pulse.cli import app
from schemas import Item, ItemCodec

SPEC = "synthetic:users=200,items=600,categories=6,taste=0.8"
CONFIG = parse_synthetic_overrides(SPEC.partition(":")[2])


def run_pulse(settings: Settings, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ, "PULSE_HOME": str(tmp_path), "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "PULSE_TOPIC_ITEMS": settings.topic_items,
    }
    return subprocess.run(
        [sys.executable, "-m", "pulse", *args], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )


def read_topic(settings: Settings, expected: int, timeout_s: float = 20.0) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of ``expected`` records of the items topic, in offset order per partition."""
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"test-items-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }))
    consumer.assign([TopicPartition(settings.topic_items, p, 0) for p in range(settings.partitions)])
    records: list[tuple[int, bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=1000, timeout=0.5):
                assert msg.error() is None, msg.error()
                records.append((msg.partition(), msg.key(), msg.value()))
    finally:
        consumer.close()
    return records


def test_synthetic_catalogue_lands_once_per_item_keyed_by_item_id(settings: Settings, tmp_path: Path) -> None:
    started = time.monotonic()
    # `--topic items` names the configured items topic (here PULSE_TOPIC_ITEMS, this test's own).
    result = run_pulse(settings, tmp_path, "produce", "--topic", "items", "--source", SPEC, "--new-items", "12")
    assert result.returncode == 0, result.stderr
    assert "produced 612, failed 0" in result.stdout

    expected = list(synthetic_catalogue(CONFIG, new_items=12))
    records = read_topic(settings, len(expected))
    codec = ItemCodec()
    received = [codec.decode(value) for _, _, value in records]
    assert len(records) == len(expected) == 612
    assert all(key == item.item_id.encode() for (_, key, _), item in zip(records, received, strict=True))
    assert {item.item_id: item for item in received} == {item.item_id: item for item in expected}

    admin = AdminClient(settings.kafka_config())
    resource = ConfigResource(ResourceType.TOPIC, settings.topic_items)
    configs = admin.describe_configs([resource])[resource].result(timeout=10)
    assert configs["cleanup.policy"].value == "compact"

    # An update of the same items goes to the same partitions and comes after the first entry:
    # what compaction keeps is the latest entry of each item.
    with ItemProducer(settings) as producer:
        for _ in producer.send_all(synthetic_catalogue(CONFIG, unavailable=40)):
            pass
    assert producer.report.produced == 600 and producer.report.ok
    records = read_topic(settings, 1_212)
    latest: dict[str, tuple[int, Item]] = {}
    for partition, key, value in records:
        item = codec.decode(value)
        assert latest.get(key.decode(), (partition, item))[0] == partition
        latest[key.decode()] = (partition, item)
    assert sum(not item.available for _, item in latest.values()) == 40
    print(f"\n612 + 600 catalogue entries produced and read back in {time.monotonic() - started:.1f} s")



def test_a_bad_jsonl_line_is_one_error_line_after_the_good_items(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"item_id": "a", "category": "x"}\n{"item_id": "b"}\n{"item_id": "c", "stock": 3}\n')
    env = {"PULSE_HOME": str(tmp_path), "PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
           "PULSE_TOPIC_ITEMS": settings.topic_items}
    # In process (the CLI's import cost is paid once, above); stderr apart from stdout.
    result = CliRunner().invoke(app, ["produce", "--topic", "items", "--source", f"jsonl:{path}"], env=env)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:3: unknown fields ['stock']" in lines[0], result.stderr
    assert "after 2 items produced" in lines[0]
    assert sorted(codec_ids(read_topic(settings, 2))) == ["a", "b"]


def codec_ids(records: list[tuple[int, bytes, bytes]]) -> list[str]:
    codec = ItemCodec()
    return [codec.decode(value).item_id for _, _, value in records]
