"""How Pulse's clients connect to a secured Kafka (TLS, SASL) and Redis (``rediss://``).

:class:`ConnectionSecurity` holds the settings (``PULSE_KAFKA_SECURITY_PROTOCOL`` and friends;
:class:`config.Settings` inherits them) and turns them into client configuration in one place
each: :meth:`~ConnectionSecurity.kafka_security_config` for every confluent-kafka (librdkafka)
client, :meth:`~ConnectionSecurity.kafka_java_properties` for the job's Java ``KafkaSource`` and
``KafkaSink``, :meth:`~ConnectionSecurity.redis_tls_kwargs` for every redis-py client.
Passwords are ``SecretStr``: settings print ``**********``; only these functions unwrap them.

>>> s = ConnectionSecurity(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="PLAIN",
...                        kafka_sasl_username="app", kafka_sasl_password="s3cret", kafka_ssl_ca_file="/ca.pem")
>>> "s3cret" in repr(s)
False
>>> s.kafka_security_config()["sasl.password"], s.kafka_security_config()["ssl.ca.location"]
('s3cret', '/ca.pem')
>>> s.kafka_java_properties()["sasl.jaas.config"].split(" required ")[0].rsplit(".", 1)[1]
'PlainLoginModule'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

#: Where the Kafka client classes live in the connector jar the job uses
#: (``flink-sql-connector-kafka`` relocates them); a JAAS line names its login module by class name.
FLINK_KAFKA_PACKAGE = "org.apache.flink.kafka.shaded.org.apache.kafka"

_LOGIN_MODULES: dict[str, str] = {
    "PLAIN": "common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "common.security.scram.ScramLoginModule",
}


class ConnectionSecurity(BaseSettings):
    """TLS and SASL settings of the Kafka clients, TLS of the Redis clients (env ``PULSE_*``)."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="forbid", frozen=True)

    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default="PLAINTEXT", description="Kafka security.protocol (SASL_SSL for most managed clusters)"
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        default="SCRAM-SHA-512", description="SASL mechanism (SASL_* protocols)"
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password")
    kafka_ssl_ca_file: Path | None = Field(
        default=None, description="PEM file of the CA(s) that signed the brokers' certificates; unset = the system's"
    )
    kafka_ssl_cert_file: Path | None = Field(default=None, description="PEM client certificate (mutual TLS)")
    kafka_ssl_key_file: Path | None = Field(
        default=None, description="PEM private key (PKCS#8) of the client certificate"
    )
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Passphrase of an encrypted client key")
    redis_ssl_ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA that signed Redis's certificate (rediss:// URLs); unset = the system's",
    )

    @field_validator(
        "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_ca_file", "kafka_ssl_cert_file",
        "kafka_ssl_key_file", "kafka_ssl_key_password", "redis_ssl_ca_file", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``PULSE_KAFKA_SSL_CA_FILE=`` means unset (not the current directory)."""
        return None if value == "" else value

    @property
    def kafka_uses_sasl(self) -> bool:
        """The protocol authenticates with SASL."""
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_uses_tls(self) -> bool:
        """The protocol encrypts with TLS."""
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_security_config(self) -> dict[str, str]:
        """The librdkafka properties for the protocol, SASL credentials and certificates ({} for PLAINTEXT).

        >>> ConnectionSecurity().kafka_security_config()
        {}
        """
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        config = {"security.protocol": self.kafka_security_protocol.lower()}
        if self.kafka_uses_sasl:
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username or ""
            config["sasl.password"] = _reveal(self.kafka_sasl_password)
        if self.kafka_uses_tls:
            for key, path in (
                ("ssl.ca.location", self.kafka_ssl_ca_file),
                ("ssl.certificate.location", self.kafka_ssl_cert_file),
                ("ssl.key.location", self.kafka_ssl_key_file),
            ):
                if path is not None:
                    config[key] = str(path)
            if self.kafka_ssl_key_password is not None:
                config["ssl.key.password"] = _reveal(self.kafka_ssl_key_password)
        return config

    def kafka_java_properties(self, client_package: str = FLINK_KAFKA_PACKAGE) -> dict[str, str]:
        """The same settings as Java Kafka client properties (the job's ``KafkaSource`` / ``KafkaSink``).

        ``client_package`` is where the Kafka client classes are in the jar the job loads; pass
        ``"org.apache.kafka"`` for an unrelocated ``kafka-clients``. The CA is read by path (it
        must exist where the job's tasks run); a client certificate and key are passed by content
        (Kafka takes them apart only inline), as password-typed properties Kafka logs as ``[hidden]``.

        >>> ConnectionSecurity().kafka_java_properties()
        {}
        """
        if self.kafka_security_protocol == "PLAINTEXT":
            return {}
        properties: dict[str, str] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_uses_sasl:
            module = f"{client_package}.{_LOGIN_MODULES[self.kafka_sasl_mechanism]}"
            username = _jaas_quote(self.kafka_sasl_username or "")
            password = _jaas_quote(_reveal(self.kafka_sasl_password))
            properties["sasl.mechanism"] = self.kafka_sasl_mechanism
            properties["sasl.jaas.config"] = f'{module} required username="{username}" password="{password}";'
        if self.kafka_uses_tls:
            if self.kafka_ssl_ca_file is not None:
                properties["ssl.truststore.type"] = "PEM"
                properties["ssl.truststore.location"] = str(self.kafka_ssl_ca_file)
            if self.kafka_ssl_cert_file is not None and self.kafka_ssl_key_file is not None:
                properties["ssl.keystore.type"] = "PEM"
                properties["ssl.keystore.certificate.chain"] = self.kafka_ssl_cert_file.read_text()
                properties["ssl.keystore.key"] = self.kafka_ssl_key_file.read_text()
                if self.kafka_ssl_key_password is not None:
                    properties["ssl.key.password"] = _reveal(self.kafka_ssl_key_password)
        return properties

    def kafka_security_problem(self) -> str | None:
        """What is missing or wrong in these settings (one line naming the setting), or None.

        >>> ConnectionSecurity(kafka_security_protocol="SASL_SSL", kafka_sasl_username="app").kafka_security_problem()
        'PULSE_KAFKA_SECURITY_PROTOCOL is SASL_SSL but PULSE_KAFKA_SASL_PASSWORD is not set'
        """
        protocol = self.kafka_security_protocol
        if self.kafka_uses_sasl:
            if not self.kafka_sasl_username:
                return f"PULSE_KAFKA_SECURITY_PROTOCOL is {protocol} but PULSE_KAFKA_SASL_USERNAME is not set"
            if not _reveal(self.kafka_sasl_password):
                return f"PULSE_KAFKA_SECURITY_PROTOCOL is {protocol} but PULSE_KAFKA_SASL_PASSWORD is not set"
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            return "PULSE_KAFKA_SSL_CERT_FILE and PULSE_KAFKA_SSL_KEY_FILE go together; one is not set"
        if self.kafka_uses_tls:
            for name, path in (
                ("PULSE_KAFKA_SSL_CA_FILE", self.kafka_ssl_ca_file),
                ("PULSE_KAFKA_SSL_CERT_FILE", self.kafka_ssl_cert_file),
                ("PULSE_KAFKA_SSL_KEY_FILE", self.kafka_ssl_key_file),
            ):
                if path is not None and not path.is_file():
                    return f"{name}: no such file {path}"
        return None

    def redis_tls_problem(self) -> str | None:
        """A Redis CA file that is not there (one line naming the setting), or None."""
        ca = self.redis_ssl_ca_file
        return f"PULSE_REDIS_SSL_CA_FILE: no such file {ca}" if ca is not None and not ca.is_file() else None

    def redis_tls_kwargs(self, url: str) -> dict[str, str]:
        """redis-py keyword arguments for TLS to ``url`` (a CA for ``rediss://``; none for ``redis://``).

        >>> ConnectionSecurity(redis_ssl_ca_file="/ca.pem").redis_tls_kwargs("rediss://cache:6380/0")
        {'ssl_ca_certs': '/ca.pem'}
        >>> ConnectionSecurity(redis_ssl_ca_file="/ca.pem").redis_tls_kwargs("redis://cache:6379/0")
        {}
        """
        # A plain redis:// connection takes no ssl_* arguments (redis-py raises TypeError on them).
        if not url.startswith("rediss://") or self.redis_ssl_ca_file is None:
            return {}
        return {"ssl_ca_certs": str(self.redis_ssl_ca_file)}


def _reveal(secret: SecretStr | None) -> str:
    return secret.get_secret_value() if secret is not None else ""


def _jaas_quote(value: str) -> str:
    r"""``value`` for a double-quoted JAAS option (Kafka parses it with ``StreamTokenizer``).

    >>> print(_jaas_quote(r'p"a\ss'))
    p\"a\\ss
    """
    return value.replace("\\", "\\\\").replace('"', '\\"')
