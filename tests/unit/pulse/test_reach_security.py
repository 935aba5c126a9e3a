"""Refused logins and untrusted certificates become one line naming the setting (no broker needed)."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import KafkaError

from config import Settings
from pulse.reach import _security_refusal, kafka_problem


def secured(**extra: object) -> Settings:
    fields: dict[str, object] = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "app",
                                 "kafka_sasl_password": "pw-123", **extra}
    return Settings(**fields)  # type: ignore[arg-type]


def test_a_refused_login_names_the_credentials() -> None:
    error = KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed")
    line = _security_refusal(secured(), [KafkaError(KafkaError._TRANSPORT, "down"), error])
    assert line is not None
    assert "PULSE_KAFKA_SASL_PASSWORD" in line and "PULSE_KAFKA_SASL_USERNAME" in line and "'app'" in line
    assert "pw-123" not in line


def test_an_untrusted_certificate_names_the_ca_setting(tmp_path: Path) -> None:
    error = KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed: broker certificate")
    assert "PULSE_KAFKA_SSL_CA_FILE is not set" in (_security_refusal(secured(), [error]) or "")
    ca = tmp_path / "ca.pem"
    assert f"PULSE_KAFKA_SSL_CA_FILE is {ca}" in (_security_refusal(secured(kafka_ssl_ca_file=ca), [error]) or "")


def test_other_errors_give_no_security_reason() -> None:
    assert _security_refusal(secured(), [KafkaError(KafkaError._TRANSPORT, "Connection refused")]) is None


def test_settings_that_cannot_work_are_named_before_connecting() -> None:
    problem = kafka_problem(secured(kafka_sasl_password=None, kafka_bootstrap="127.0.0.1:1"))
    assert problem == "PULSE_KAFKA_SECURITY_PROTOCOL is SASL_SSL but PULSE_KAFKA_SASL_PASSWORD is not set"
    problem = kafka_problem(secured(kafka_ssl_ca_file="/no/ca.pem", kafka_bootstrap="127.0.0.1:1"))
    assert problem == "PULSE_KAFKA_SSL_CA_FILE: no such file /no/ca.pem"
