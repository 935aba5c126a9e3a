"""The local broker's cluster id must be one Kafka's storage tool accepts on its command line."""

from __future__ import annotations

import base64
import uuid

import pytest

from infra.local import kafka


def test_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xf8 makes the first base64 character '-': the first draw must be thrown away.
    draws = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" * 16)])
    monkeypatch.setattr(kafka.uuid, "uuid4", lambda: next(draws))
    cluster_id = kafka._kafka_uuid()
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")  # the case is real


def test_cluster_id_is_22_url_safe_characters() -> None:
    cluster_id = kafka._kafka_uuid()
    assert len(cluster_id) == 22
    assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
