"""Kafka clients log through Python logging (``pulse.kafka``), not straight to stderr (issue 22, point 4).

A client whose broker is gone retries and logs each failed connect; built from
``Settings.kafka_config`` those lines reach the ``pulse.kafka`` logger (which pytest captures and
the CLI filters), and none is written to the process's stderr. No broker is needed: the client
points at a closed port.
"""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Consumer, Producer

from config import Settings
from infra.local.process import free_port


def test_clients_of_an_unreachable_broker_write_nothing_to_stderr(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with caplog.at_level(logging.DEBUG, logger="pulse.kafka"):
        producer = Producer(settings.kafka_config(**{"message.timeout.ms": 1500}))
        producer.produce("t", b"x")
        producer.flush(2.0)
        consumer = Consumer(settings.kafka_config(**{"group.id": "g"}))
        consumer.subscribe(["t"])
        consumer.poll(1.5)
        consumer.close()
    out, err = capfd.readouterr()
    assert "Connection refused" not in out + err, err
    assert "rdkafka" not in err, err
    refused = [r for r in caplog.records if r.name == "pulse.kafka" and "Connection refused" in r.getMessage()]
    assert refused, "the client's connect failures must reach the pulse.kafka logger"
