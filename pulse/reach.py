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
import time
from urllib.parse import urlsplit

import redis as redis_lib
import typer
from confluent_kafka import KafkaError, KafkaException
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
    """Why Kafka cannot be used (one line naming the setting), or None when a broker answers a metadata request.

    Settings that cannot work (SASL without a password, a CA file that is not there) are named
    before any connection; a refused login or an untrusted certificate ends the wait at once.
    """
    problem = settings.kafka_security_problem()
    if problem:
        return problem
    addresses = kafka_addresses(settings.kafka_bootstrap)
    shown = settings.kafka_bootstrap or "(empty)"
    if any(_accepts(host, port, timeout_s) for host, port in addresses):
        refusal = _metadata_refusal(settings, timeout_s)
        if refusal is None:
            return None
        if refusal:
            return f"Kafka at {shown} {refusal}"
    local = any(host in _LOCAL_HOSTS and port == settings.kafka_port for host, port in addresses)
    return f"cannot reach Kafka at {shown} (PULSE_KAFKA_BOOTSTRAP){_up_hint(local)}"


def _accepts(host: str, port: int, timeout_s: float) -> bool:
    """A TCP connection is accepted (fails fast on a closed port; a proxy may accept anything, hence the next)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _metadata_refusal(settings: Settings, timeout_s: float) -> str | None:
    """None when cluster metadata arrives within ``timeout_s``; else why not ("" when no reason is known).

    The client's own logs are dropped; its errors come to ``error_cb``, and a refused login or TLS
    handshake is final (the client would retry it forever), so the wait stops at the first.
    """
    errors: list[KafkaError] = []
    setup_ms = max(int(timeout_s * 1000), 1000)
    try:
        admin = AdminClient(settings.kafka_config(
            logger=_SILENT, error_cb=errors.append, **{"socket.connection.setup.timeout.ms": setup_ms}
        ))
    except KafkaException as exc:  # e.g. a client key its passphrase does not open
        text = _kafka_error_text(exc)
        named = "PULSE_KAFKA_SSL_KEY_FILE, PULSE_KAFKA_SSL_KEY_PASSWORD" if "ssl.key" in text else "PULSE_KAFKA_*"
        return f"cannot be used with these settings: {text} ({named})"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=min(0.5, max(deadline - time.monotonic(), 0.05)))
            return None
        except KafkaException:
            admin.poll(0)  # serves error_cb
        refusal = _security_refusal(settings, errors)
        if refusal:
            return refusal
    return ""


def _security_refusal(settings: Settings, errors: list[KafkaError]) -> str | None:
    """A one-line reason for an authentication or TLS error among ``errors``, naming the setting."""
    for error in errors:
        if error.code() == KafkaError._AUTHENTICATION:
            return (
                f"refused the {settings.kafka_sasl_mechanism} login of user {settings.kafka_sasl_username!r}: "
                "wrong PULSE_KAFKA_SASL_PASSWORD or unknown PULSE_KAFKA_SASL_USERNAME"
            )
        if error.code() == KafkaError._SSL and "certificate verify failed" in error.str():
            ca = settings.kafka_ssl_ca_file
            given = f"is {ca}" if ca else "is not set (the system's CAs were used)"
            return f"presents a TLS certificate no trusted CA signed: PULSE_KAFKA_SSL_CA_FILE {given}"
        if error.code() == KafkaError._SSL:
            return f"failed the TLS handshake ({error.str()}) (PULSE_KAFKA_SECURITY_PROTOCOL, PULSE_KAFKA_SSL_*)"
    return None


def _kafka_error_text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def redis_problem(settings: Settings, timeout_s: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why Redis cannot be used (one line), or None when it answers ``PING``."""
    url = settings.redis_url
    if problem := settings.redis_tls_problem():
        return problem
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
    except (redis_lib.ConnectionError, redis_lib.TimeoutError, OSError) as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            ca = settings.redis_ssl_ca_file
            given = f"is {ca}" if ca else "is not set (the system's CAs were used)"
            return f"Redis at {url} presents a TLS certificate no trusted CA signed: PULSE_REDIS_SSL_CA_FILE {given}"
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
