"""The local broker's JVM options: Kafka's own variable, G1 when it is unset."""

from __future__ import annotations

import pytest

from infra.local import kafka


def test_unset_gives_kafkas_default_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kafka.JVM_PERFORMANCE_OPTS, raising=False)
    assert kafka.jvm_performance_options() == ["-XX:+UseG1GC"]


def test_set_is_split_like_a_shell_would(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kafka.JVM_PERFORMANCE_OPTS, "-XX:+UseSerialGC  -XX:TieredStopAtLevel=1 '-Dx=a b'")
    assert kafka.jvm_performance_options() == ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Dx=a b"]
