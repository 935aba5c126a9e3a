"""Kafka TLS/SASL and Redis TLS settings become the right client configuration (no services)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka import Producer

from config import Settings
from config.connections import FLINK_KAFKA_PACKAGE

PASSWORD = 'pa"ss\\word-7f3a'
KEY_PASSWORD = "key-passphrase-91c2"


def secured(tmp_path: Path, **extra: object) -> Settings:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")
    fields: dict[str, object] = {
        "kafka_bootstrap": "broker:9094", "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": "pulse",
        "kafka_sasl_password": PASSWORD, "kafka_ssl_ca_file": ca, **extra,
    }
    return Settings(**fields)  # type: ignore[arg-type]


def test_plaintext_adds_nothing() -> None:
    config = Settings().kafka_config()
    assert set(config) == {"bootstrap.servers", "logger"}
    assert Settings().kafka_java_properties() == {}


def test_every_confluent_client_config_carries_the_security(tmp_path: Path) -> None:
    settings = secured(tmp_path)
    config = settings.kafka_config(**{"group.id": "g"})
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert (config["sasl.username"], config["sasl.password"]) == ("pulse", PASSWORD)
    assert config["ssl.ca.location"] == str(tmp_path / "ca.pem")
    assert config["group.id"] == "g"
    assert "ssl.certificate.location" not in config
    Producer({k: v for k, v in config.items() if k not in ("group.id", "ssl.ca.location")})  # librdkafka accepts it


def test_client_certificate_and_key_password(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    cert.write_text("CERT-PEM")
    key.write_text("KEY-PEM")
    settings = secured(tmp_path, kafka_ssl_cert_file=cert, kafka_ssl_key_file=key,
                       kafka_ssl_key_password=KEY_PASSWORD)
    config = settings.kafka_config()
    assert (config["ssl.certificate.location"], config["ssl.key.location"]) == (str(cert), str(key))
    assert config["ssl.key.password"] == KEY_PASSWORD
    java = settings.kafka_java_properties()
    assert java["ssl.keystore.type"] == "PEM"
    assert (java["ssl.keystore.certificate.chain"], java["ssl.keystore.key"]) == ("CERT-PEM", "KEY-PEM")
    assert java["ssl.key.password"] == KEY_PASSWORD


@pytest.mark.parametrize(("mechanism", "module"), [
    ("SCRAM-SHA-512", "common.security.scram.ScramLoginModule"),
    ("SCRAM-SHA-256", "common.security.scram.ScramLoginModule"),
    ("PLAIN", "common.security.plain.PlainLoginModule"),
])
def test_java_properties_for_the_jobs_source_and_sinks(tmp_path: Path, mechanism: str, module: str) -> None:
    java = secured(tmp_path, kafka_sasl_mechanism=mechanism).kafka_java_properties()
    assert java["security.protocol"] == "SASL_SSL"
    assert java["sasl.mechanism"] == mechanism
    assert (java["ssl.truststore.type"], java["ssl.truststore.location"]) == ("PEM", str(tmp_path / "ca.pem"))
    jaas = re.fullmatch(r'(\S+) required username="(.*)" password="(.*)";', java["sasl.jaas.config"])
    assert jaas is not None, java["sasl.jaas.config"]
    assert jaas[1] == f"{FLINK_KAFKA_PACKAGE}.{module}"
    assert jaas[2] == "pulse"
    assert jaas[3] == 'pa\\"ss\\\\word-7f3a'  # quote and backslash escaped for Kafka's JAAS parser
    assert all(isinstance(v, str) for v in java.values())
    unshaded = secured(tmp_path, kafka_sasl_mechanism=mechanism).kafka_java_properties("org.apache.kafka")
    assert unshaded["sasl.jaas.config"].startswith(f"org.apache.kafka.{module} required")


def test_ssl_without_sasl_has_no_credentials(tmp_path: Path) -> None:
    settings = secured(tmp_path, kafka_security_protocol="SSL")
    assert not any(k.startswith("sasl.") for k in settings.kafka_config())
    assert not any(k.startswith("sasl.") for k in settings.kafka_java_properties())


@pytest.mark.parametrize(("extra", "named"), [
    ({"kafka_sasl_password": None}, "PULSE_KAFKA_SASL_PASSWORD"),
    ({"kafka_sasl_username": ""}, "PULSE_KAFKA_SASL_USERNAME"),
    ({"kafka_ssl_ca_file": "/no/such/ca.pem"}, "PULSE_KAFKA_SSL_CA_FILE"),
    ({"kafka_ssl_cert_file": "/etc/hostname"}, "PULSE_KAFKA_SSL_KEY_FILE"),
])
def test_unusable_settings_are_named(tmp_path: Path, extra: dict[str, object], named: str) -> None:
    problem = secured(tmp_path, **extra).kafka_security_problem()
    assert problem is not None and named in problem and "\n" not in problem
    assert secured(tmp_path).kafka_security_problem() is None


def test_empty_environment_value_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_KAFKA_SSL_CA_FILE", "")
    assert Settings().kafka_ssl_ca_file is None


def test_secrets_are_not_rendered(tmp_path: Path) -> None:
    settings = secured(tmp_path, kafka_ssl_key_password=KEY_PASSWORD)
    for rendering in (repr(settings), str(settings), settings.model_dump_json()):
        assert "word-7f3a" not in rendering and KEY_PASSWORD not in rendering
    assert settings.to_env()["PULSE_KAFKA_SASL_PASSWORD"] == PASSWORD  # a child process gets it back
    assert Settings(**{k: v for k, v in settings.model_dump().items()}).kafka_config()["sasl.password"] == PASSWORD


def test_rediss_gets_the_ca_and_redis_does_not(tmp_path: Path) -> None:
    ca = tmp_path / "redis-ca.pem"
    tls = Settings(redis_url="rediss://:pw@cache:6380/0", redis_ssl_ca_file=ca)
    assert tls.redis_client_kwargs() == {"password": "pw", "ssl_ca_certs": str(ca)}
    assert Settings(redis_url="redis://cache:6379/0", redis_ssl_ca_file=ca).redis_client_kwargs() == {}
    assert tls.redis_tls_problem() == f"PULSE_REDIS_SSL_CA_FILE: no such file {ca}"
