"""Can a command reach Kafka and Redis? One clear line when it cannot, before any client starts.

Commands that need a service call :func:`require` first: it tries a TCP connection to the Kafka
bootstrap servers and a Redis ``PING``, each with a short timeout, and raises the command's exit
with one line naming the address and the setting it came from (and ``pulse up`` when the address
is the one the local services listen on), instead of a client's traceback or a hang.

>>> kafka_addresses("PLAINTEXT://broker-1:9092, [::1]:19092,localhost")
[('broker-1', 9092), ('::1', 19092), ('localhost', 9092)]
"""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlsplit

import redis as redis_lib
import typer
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from config import Settings
from pulse.app import fail

#: How long one connection attempt may take: long enough for a remote broker, short enough not to hang.
CONNECT_TIMEOUT_S = 3.0
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
#: The probe's own client logs nothing: a failed probe is reported as one line by the command.
_SILENT = logging.getLogger("pulse.reach.probe")
_SILENT.addHandler(logging.NullHandler())
_SILENT.propagate = False


def kafka_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """(host, port) of each bootstrap server (``[scheme://]host[:port]``, IPv6 in brackets; port 9092)."""
    found = []
    for server in (part.strip() for part in bootstrap.split(",")):
        if not server:
            continue
        parts = urlsplit(server if "://" in server else f"kafka://{server}")
        found.append((parts.hostname or "", parts.port or 9092))
    return found


def kafka_problem(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why Kafka cannot be reached (one line), or None when a bootstrap server answers a metadata request."""
    addresses = kafka_addresses(settings.kafka_bootstrap)
    if any(_accepts(host, port, timeout_s) for host, port in addresses) and _answers_metadata(settings, timeout_s):
        return None
    local = any(host in _LOCAL_HOSTS and port == settings.kafka_port for host, port in addresses)
    shown = settings.kafka_bootstrap or "(empty)"
    return f"cannot reach Kafka at {shown} (PULSE_KAFKA_BOOTSTRAP){_up_hint(local)}"


def _accepts(host: str, port: int, timeout_s: float) -> bool:
    """A TCP connection is accepted (fails fast on a closed port; a proxy may accept anything, hence the next)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _answers_metadata(settings: Settings, timeout_s: float) -> bool:
    """A Kafka broker answers: cluster metadata arrives within ``timeout_s`` (the client's own logs are dropped)."""
    setup_ms = max(int(timeout_s * 1000), 1000)
    admin = AdminClient(settings.kafka_config(logger=_SILENT, **{"socket.connection.setup.timeout.ms": setup_ms}))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def redis_problem(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why Redis cannot be used (one line), or None when it answers ``PING``."""
    url = settings.redis_url
    try:
        client = redis_lib.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s, **settings.redis_client_kwargs()
        )
    except ValueError as exc:  # not a redis:// URL
        return f"PULSE_REDIS_URL is not a Redis URL ({url}): {exc}"
    try:
        client.ping()
    except redis_lib.AuthenticationError:
        return f"Redis at {url} refused the password (PULSE_REDIS_PASSWORD)"
    except (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError):
        parts = urlsplit(url)
        local = parts.hostname in _LOCAL_HOSTS and parts.port == settings.redis_port
        return f"cannot reach Redis at {url} (PULSE_REDIS_URL){_up_hint(local)}"
    except redis_lib.ResponseError as exc:  # e.g. NOAUTH from a server that wants a password
        return f"Redis at {url} answered {exc} (PULSE_REDIS_PASSWORD)"
    finally:
        client.close()
    return None


def require(settings: Settings, *, kafka: bool = False, redis: bool = False, code: int = 1) -> None:
    """Raise the command's exit (one ``error:`` line on stderr) when a needed service is unreachable."""
    problem = (kafka and kafka_problem(settings)) or (redis and redis_problem(settings)) or None
    if problem:
        raise fail(problem, code=code)


def warn(problem: str | None, then: str = "") -> bool:
    """For commands that run on without the service: print ``problem`` as one ``warning:`` line; True if none."""
    if problem:
        typer.secho(f"warning: {problem}{then}", err=True)
    return problem is None


def _up_hint(local: bool) -> str:
    return "; start local services with 'pulse up'" if local else ""


__all__ = ["CONNECT_TIMEOUT_S", "kafka_addresses", "kafka_problem", "redis_problem", "require", "warn"]
