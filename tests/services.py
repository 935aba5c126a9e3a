"""Where integration tests find real Kafka and Redis, in this order.

1. ``PULSE_KAFKA_BOOTSTRAP`` / ``PULSE_REDIS_URL`` in the environment: used as they are.
2. A Docker engine that answers: testcontainers starts the services.
3. Otherwise the project's own local processes (infra/local), started once per test session
   on free ports under a temporary home and stopped at the end.

Integration tests never mock Kafka or Redis.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from config import REPO_ROOT
from infra.local.kafka import KafkaBroker
from infra.local.process import ServiceError, free_port
from infra.local.redis import RedisServer

_Service = TypeVar("_Service", KafkaBroker, RedisServer)


@dataclass(frozen=True)
class Endpoints:
    """Addresses of the services one test session talks to, and who provided them."""

    kafka_bootstrap: str
    redis_url: str
    provider: str  # "env" | "testcontainers" | "local"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=2)
        return bool(client.ping())
    except Exception:  # noqa: BLE001 - no engine, no socket, no permission: all mean "no"
        return False


@contextlib.contextmanager
def _from_testcontainers() -> Iterator[tuple[str, str]]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    with KafkaContainer().with_kraft() as kafka, RedisContainer() as redis:
        host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        yield kafka.get_bootstrap_server(), f"redis://{host}:{port}/0"


@contextlib.contextmanager
def _from_local_processes() -> Iterator[tuple[str, str]]:
    # Jars are shared with the developer's .local (resolved once); data and logs are per run.
    jars_home = REPO_ROOT / ".local"
    home = Path(tempfile.mkdtemp(prefix="pulse-test-"))
    (home / "jars").symlink_to(jars_home / "jars", target_is_directory=True)
    (jars_home / "jars").mkdir(parents=True, exist_ok=True)
    redis = start_on_free_ports(lambda: RedisServer(home, free_port()), timeout_s=60)
    kafka = start_on_free_ports(lambda: KafkaBroker(home, free_port(), free_port()), timeout_s=120)
    try:
        yield kafka.bootstrap, redis.url
    finally:
        kafka.process.stop()
        redis.process.stop()
        if os.environ.get("PULSE_KEEP_TEST_HOME"):
            print(f"test services' data and logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def start_on_free_ports(make: Callable[[], _Service], timeout_s: float, attempts: int = 3) -> _Service:
    """Start a service on ports free a moment ago; another process may take one first, so retry."""
    for attempt in range(1, attempts + 1):
        service = make()
        service.process.die_with_parent = True  # a killed test run leaves no service behind
        try:
            service.start(timeout_s=timeout_s)
            return service
        except ServiceError:
            service.process.stop()
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def service_endpoints() -> Iterator[Endpoints]:
    """Real Kafka and Redis for one test session."""
    env_kafka = os.environ.get("PULSE_KAFKA_BOOTSTRAP")
    env_redis = os.environ.get("PULSE_REDIS_URL")
    if env_kafka and env_redis:
        yield Endpoints(env_kafka, env_redis, "env")
        return
    if _docker_answers():
        with _from_testcontainers() as (kafka, redis):
            yield Endpoints(env_kafka or kafka, env_redis or redis, "testcontainers")
        return
    with _from_local_processes() as (kafka, redis):
        yield Endpoints(env_kafka or kafka, env_redis or redis, "local")
