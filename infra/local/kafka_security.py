"""What makes the local broker a secured one: a ``SASL_SSL``-only listener, SCRAM users, ACLs.

Clients connect over TLS (the server certificate of :mod:`infra.local.tls`; a client certificate
is verified when one is offered) and log in with SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN. The
controller listener speaks ``SASL_SSL`` too (PLAIN, the broker's own ``admin`` user), so no
listener accepts an anonymous connection. SCRAM users are written into the metadata log by
Kafka's storage tool when storage is formatted (``--add-scram``); they also log in with PLAIN.
The ``StandardAuthorizer`` denies what no ACL allows; ``admin`` is the super user, and each user
is granted what Pulse's clients do (topics, consumer groups, transactional ids).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from infra.local.process import ServiceError
from infra.local.tls import LocalCertificates

ADMIN_USER = "admin"
_PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"
_SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"

_LISTENERS = """\
listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=SASL_SSL://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:SASL_SSL,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256,PLAIN
sasl.mechanism.inter.broker.protocol=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config={admin_jaas}
listener.name.sasl_ssl.plain.sasl.jaas.config={plain_jaas}
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={scram_jaas}
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config={scram_jaas}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
ssl.client.auth=requested
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:{admin}
allow.everyone.if.no.acl.found=false"""

#: What each user may do: everything on topics, consumer groups and transactional ids (by name
#: "*"), and the cluster-level operations an idempotent producer and a metadata request need.
_GRANTS = (
    (ResourceType.TOPIC, "*", AclOperation.ALL),
    (ResourceType.GROUP, "*", AclOperation.ALL),
    (ResourceType.TRANSACTIONAL_ID, "*", AclOperation.ALL),
    (ResourceType.BROKER, "kafka-cluster", AclOperation.IDEMPOTENT_WRITE),
    (ResourceType.BROKER, "kafka-cluster", AclOperation.DESCRIBE),
)


@dataclass(frozen=True)
class BrokerSecurity:
    """A ``SASL_SSL``-only broker: its certificates, its own password, and its users (name -> password).

    ``users`` get SCRAM credentials and ACLs; ``ungranted`` users get credentials only (they can log
    in, and the authorizer refuses them everything: a check that ACLs are on).
    """

    certs: LocalCertificates
    admin_password: str
    users: Mapping[str, str]
    ungranted: Mapping[str, str] | None = None

    def __repr__(self) -> str:
        return f"BrokerSecurity(certs={self.certs!r}, users={sorted(self.users)})"  # no passwords

    def _all_users(self) -> dict[str, str]:
        return {**self.users, **(self.ungranted or {})}

    def listener_properties(self, port: int, controller_port: int) -> str:
        """The listener part of ``server.properties`` (it holds passwords: the file is 0600)."""
        admin = _jaas_login(_PLAIN, ADMIN_USER, self.admin_password)
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self._all_users().items())
        return _LISTENERS.format(
            port=port, controller_port=controller_port, admin=ADMIN_USER,
            admin_jaas=f'{admin[:-1]} user_{ADMIN_USER}="{self.admin_password}";',
            plain_jaas=f'{admin[:-1]} user_{ADMIN_USER}="{self.admin_password}" {plain_users};',
            scram_jaas=f"{_SCRAM} required;",
            keystore=self.certs.server_keystore, ca=self.certs.ca_file,
        )

    def storage_format_arguments(self) -> list[str]:
        """``kafka-storage format`` arguments that create each user's SCRAM-SHA-512 and -256 credentials."""
        arguments = []
        for name, password in self._all_users().items():
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256"):
                arguments += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        return arguments

    def redact(self, text: str) -> str:
        """``text`` with every password of this broker replaced by ``***``."""
        for secret in (self.admin_password, *self._all_users().values()):
            text = text.replace(secret, "***")
        return text

    def admin_client_config(self) -> dict[str, Any]:
        """The librdkafka settings of the broker's super user."""
        return {
            "security.protocol": "sasl_ssl", "sasl.mechanism": "PLAIN", "sasl.username": ADMIN_USER,
            "sasl.password": self.admin_password, "ssl.ca.location": str(self.certs.ca_file),
        }

    def grant_users(self, admin_config: dict[str, Any]) -> None:
        """Create the ACLs of every user in ``users`` (creating an existing ACL again is a no-op)."""
        bindings = [
            AclBinding(kind, name, ResourcePatternType.LITERAL, f"User:{user}", "*", operation,
                       AclPermissionType.ALLOW)
            for user in self.users
            for kind, name, operation in _GRANTS
        ]
        admin = AdminClient(admin_config)  # held until the results are in: its destruction fails them
        futures = admin.create_acls(bindings, request_timeout=30)
        try:
            for future in futures.values():
                future.result(timeout=30)
        except KafkaException as exc:
            raise ServiceError(f"creating the broker's ACLs failed: {exc}") from exc


def _jaas_login(module: str, username: str, password: str) -> str:
    return f'{module} required username="{username}" password="{password}";'
