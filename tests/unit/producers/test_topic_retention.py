"""The topics holding users' events get a bounded retention from the settings (issue 22.6)."""

from __future__ import annotations

from config import Settings
from producers.topics import pulse_topics
from serving.erasure import ErasureRecord, user_digest


def test_user_data_topics_have_the_configured_retention() -> None:
    s = Settings(topic_retention_ms=86_400_000, topic_segment_ms=600_000)
    topics = pulse_topics(s)
    for name in (s.topic_events, s.topic_sessions, s.topic_dlq):
        assert topics[name]["retention.ms"] == "86400000", name
        assert topics[name]["segment.ms"] == "600000", name
        assert topics[name]["cleanup.policy"] == "delete", name
        assert topics[name]["message.timestamp.type"] == "LogAppendTime", name
    assert topics[s.topic_dlq]["max.message.bytes"] == str(2 * 1024 * 1024)
    assert topics[s.topic_items] == {"cleanup.policy": "compact"}


def test_the_erasure_bound_is_retention_plus_a_segment_plus_the_broker_check() -> None:
    s = Settings(topic_retention_ms=86_400_000, topic_segment_ms=600_000)
    assert s.erasure_bound_ms() == 86_400_000 + 600_000 + 300_000
    assert Settings().erasure_bound_ms() <= 74 * 3_600_000  # the README's "about 73 hours"


def test_the_erasure_record_names_no_user() -> None:
    record = ErasureRecord.of(Settings(), "alice@example.org", "ev-1", keys_deleted=4, at_ms=10)
    fields = record.fields()
    assert all("alice" not in value for value in fields.values())
    assert fields["user_digest"] == user_digest("alice@example.org") != user_digest("bob")
    assert fields["kafka_deleted_by_ms"] == str(10 + Settings().erasure_bound_ms())
