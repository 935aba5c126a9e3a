"""One typed settings object for every Pulse command, built from environment and flags.

Every field reads ``PULSE_<FIELD>`` from the environment (e.g. ``PULSE_KAFKA_BOOTSTRAP``);
CLI flags override the environment; code receives a :class:`Settings` and never reads the
environment itself.

>>> s = Settings(kafka_bootstrap="127.0.0.1:19092", redis_password="hunter2")
>>> s.topic_events, s.partitions
('events', 4)
>>> "hunter2" in repr(s)
False
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Addresses, topic names, local-service ports and limits. Env prefix: ``PULSE_``."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="forbid", frozen=True)

    # Where things are. Defaults are the local services `pulse up` starts.
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (without password)")
    redis_password: SecretStr | None = Field(None, description="Redis password (AUTH)")
    schema_registry_url: str | None = Field(None, description="Schema Registry; unset = schemas/registry.json")

    # Topics.
    topic_events: str = "events"
    topic_items: str = "items"
    topic_dlq: str = "events.dlq"
    topic_sessions: str = "sessions"
    partitions: int = Field(4, ge=1, description="Partitions of topics Pulse creates")

    # Redis keys.
    redis_prefix: str = Field("pulse", description="Prefix of every Redis key Pulse writes")

    # Local services started by `pulse up` (infra/local/).
    home: Path = Field(REPO_ROOT / ".local", description="Jars, data and logs of local services")
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    redis_port: int = 6379
    kafka_heap: str = "512m"
    start_timeout_s: float = Field(90.0, gt=0, description="How long `pulse up` waits for health")

    def redis_client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``redis.Redis.from_url(settings.redis_url, **kwargs)``."""
        password = self.redis_password.get_secret_value() if self.redis_password else None
        return {"password": password} if password else {}

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """A confluent-kafka client config for this cluster."""
        return {"bootstrap.servers": self.kafka_bootstrap, **extra}
