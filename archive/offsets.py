"""Offsets of the archive's group, read with retries while the group's coordinator is not ready.

A broker just started (or a group's coordinator moving) answers ``NOT_COORDINATOR`` or
``COORDINATOR_LOAD_IN_PROGRESS`` for a few seconds; those are retried, anything else is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

T = TypeVar("T")

_NOT_READY = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
              KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TIMED_OUT}


def _retrying(call: Callable[[], T], timeout_s: float) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            ready = not isinstance(error, KafkaError) or (error.code() not in _NOT_READY and not error.retriable())
            if ready or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def committed(consumer: Consumer, topic: str, partitions: list[int], timeout_s: float = 60.0) -> dict[int, int]:
    """Partition -> committed offset of ``consumer``'s group (-1001 where none is)."""
    asked = [TopicPartition(topic, p) for p in partitions]
    return {tp.partition: tp.offset for tp in _retrying(lambda: consumer.committed(asked, timeout=10), timeout_s)}

