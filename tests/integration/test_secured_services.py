"""Pulse against a Kafka that only speaks SASL_SSL and a Redis that only speaks TLS (issue 21).

Own services for this module: a broker whose one client listener is ``SASL_SSL`` (SCRAM users
made by Kafka's storage tool, ACLs on, certificates made by ``openssl`` at start) and a Redis
with a TLS port only (and a password). Every client is configured by the settings alone:
``pulse produce``, ``pulse serve`` (``/v1/events`` and ``/v1/decisions`` write to Kafka, read
Redis), ``pulse lag`` and the job. Wrong credentials and a missing CA end a command at once with
one line naming the setting. No secret appears in anything printed or logged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis as redis_lib
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from config import REPO_ROOT, Settings
from flink_jobs.redis_writer import RedisWriter
from infra.local.kafka import KafkaBroker
from infra.local.kafka_security import BrokerSecurity
from infra.local.process import free_port
from infra.local.redis import RedisServer
from infra.local.tls import LocalCertificates, make_certificates
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from pulse.lag import LagProbe
from schemas import EventCodec
from schemas.events import EventType
from schemas.redis_keys import RedisKeys
from serving.sync_reads import user_part
from tests.conftest import isolated_settings
from tests.integration.jobs import run_job_until, stop_job
from tests.reliability.test_security import _env, _files_containing, _wait_http
from tests.services import start_on_free_ports

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]

# Random per run: a constant could sit in some file by coincidence.
SASL_PASSWORD = f"sasl-pw-{uuid.uuid4().hex}"
KEY_PASSWORD = f"key-pw-{uuid.uuid4().hex}"
ADMIN_PASSWORD = f"admin-pw-{uuid.uuid4().hex}"
NOBODY_PASSWORD = f"nobody-pw-{uuid.uuid4().hex}"
REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex}"
SECRETS = (SASL_PASSWORD, KEY_PASSWORD, ADMIN_PASSWORD, NOBODY_PASSWORD, REDIS_PASSWORD)
N_PRODUCED = 300
#: A limit, not a measurement: a command that retried a refused login would hit it.
FAIL_FAST_S = 30


@dataclass(frozen=True)
class Secured:
    home: Path
    certs: LocalCertificates
    kafka: KafkaBroker
    redis: RedisServer

    def settings(self, **extra: Any) -> Settings:
        """Settings of the granted user "pulse" (SCRAM-SHA-512, client certificate) for one test."""
        fields: dict[str, Any] = {
            "home": self.home, "serving_workers": 1,
            "kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "pulse", "kafka_sasl_password": SASL_PASSWORD,
            "kafka_ssl_ca_file": self.certs.ca_file, "kafka_ssl_cert_file": self.certs.client_cert,
            "kafka_ssl_key_file": self.certs.client_key, "kafka_ssl_key_password": KEY_PASSWORD,
            "redis_password": REDIS_PASSWORD, "redis_ssl_ca_file": self.certs.ca_file, **extra,
        }
        return isolated_settings(self.kafka.bootstrap, self.redis.url, **fields)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    home = tmp_path_factory.mktemp("secured")
    (home / "jars").symlink_to(REPO_ROOT / ".local" / "jars", target_is_directory=True)
    certs = make_certificates(home / "tls", KEY_PASSWORD)
    security = BrokerSecurity(certs, ADMIN_PASSWORD, {"pulse": SASL_PASSWORD}, ungranted={"nobody": NOBODY_PASSWORD})
    redis = start_on_free_ports(lambda: RedisServer(home, free_port(), REDIS_PASSWORD, tls=certs), timeout_s=30)
    try:
        kafka = start_on_free_ports(lambda: KafkaBroker(home, free_port(), free_port(), security=security),
                                    timeout_s=120)
    except BaseException:
        redis.process.stop()
        raise
    try:
        yield Secured(home, certs, kafka, redis)
    finally:
        kafka.process.stop()
        redis.process.stop()


def pulse(settings: Settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A ``pulse`` command as a user runs it, configured by ``PULSE_*`` only (``env`` values "" unset one)."""
    full = _env(settings, **env)
    full = {k: v for k, v in full.items() if v != ""}
    return subprocess.run([sys.executable, "-m", "pulse", *args], cwd=REPO_ROOT, env=full,
                          capture_output=True, text=True, timeout=120, check=False)


def read_events(settings: Settings, expected: int, timeout_s: float = 60) -> list[Any]:
    """Every event on the events topic (``expected`` of them, read over SASL_SSL)."""
    codec = EventCodec()
    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"t-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest", "enable.auto.commit": False,
    }))
    consumer.subscribe([settings.topic_events])
    found: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < expected and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                found.append(codec.decode(msg.value()))
        end = time.monotonic() + 2  # nothing more than expected arrives
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                found.append(codec.decode(msg.value()))
    finally:
        consumer.close()
    return found


def tls_redis(settings: Settings) -> redis_lib.Redis:
    return redis_lib.Redis.from_url(settings.redis_url, socket_timeout=5, **settings.redis_client_kwargs())


def test_only_sasl_ssl_is_accepted_and_acls_are_on(secured: Secured) -> None:
    settings = secured.settings()
    for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"):
        admin = AdminClient(settings.model_copy(update={"kafka_sasl_mechanism": mechanism}).kafka_config())
        assert admin.list_topics(timeout=30).brokers, mechanism
    plaintext = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    with pytest.raises(KafkaException):
        plaintext.list_topics(timeout=3)  # no PLAINTEXT listener
    ensure_topics(settings, [settings.topic_events])
    nobody = settings.model_copy(update={"kafka_sasl_username": "nobody",
                                            "kafka_sasl_password": SecretStr(NOBODY_PASSWORD)})
    producer = Producer(nobody.kafka_config(**{"message.timeout.ms": 10_000}))
    errors: list[Any] = []
    producer.produce(settings.topic_events, b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(30)
    assert [e.name() for e in errors] == ["TOPIC_AUTHORIZATION_FAILED"]  # logged in, granted nothing
    anonymous = redis_lib.Redis.from_url(secured.redis.url, socket_timeout=5, **settings.redis_tls_kwargs(
        secured.redis.url))
    with pytest.raises(redis_lib.AuthenticationError):
        anonymous.ping()
    plain_redis = redis_lib.Redis(host="127.0.0.1", port=secured.redis.port, password=REDIS_PASSWORD, socket_timeout=5)
    with pytest.raises(redis_lib.ConnectionError):
        plain_redis.ping()  # no plain port


def test_produce_serve_and_lag(secured: Secured, tmp_path: Path) -> None:
    settings = secured.settings()
    outputs: dict[str, str] = {"repr(settings)": repr(settings), "json(settings)": settings.model_dump_json()}

    produced = pulse(settings, "--verbose", "produce", "synthetic:users=40,items=100", "--limit", str(N_PRODUCED))
    outputs["pulse produce"] = produced.stdout + produced.stderr
    assert produced.returncode == 0, produced.stderr
    assert f"produced {N_PRODUCED}, failed 0" in produced.stdout

    # Arms for a decision, written over TLS as the job's writer writes them.
    keys = RedisKeys(settings.redis_prefix)
    arms = {"a": [30.0, 70.0], "b": [50.0, 50.0]}
    with RedisWriter(keys, settings.model_version, client_factory=lambda: tls_redis(settings)) as writer:
        writer.write_batch([(keys.bandit("ts", "global"), int(time.time() * 1000), {
            "policy": "ts", "scope": "global", "stat_names": ["successes", "failures"], "arms": arms,
            "hyperparameters": {"prior_alpha": 1.0, "prior_beta": 1.0}})])

    port = free_port()
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "pulse", "--verbose", "serve"], cwd=REPO_ROOT, stdout=out,
                                 stderr=subprocess.STDOUT, env=_env(settings, PULSE_SERVING_PORT=str(port)),
                                 start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/healthz", serve, serve_log)
        assert httpx.get(f"{base}/readyz", timeout=10).status_code == 200  # Redis over TLS with AUTH
        posted = httpx.post(f"{base}/v1/events", timeout=30, json={
            "event_id": "secured-1", "type": "click", "user_id": "u-secure", "item_id": "i1",
            "event_time_ms": int(time.time() * 1000)})
        assert posted.status_code == 202, posted.text
        decided = httpx.post(f"{base}/v1/decisions", timeout=30, json={"user_id": "u-secure", "decision_point": "home"})
        assert decided.status_code == 200, decided.text
        decision = decided.json()
        assert decision["arm"] in arms
    finally:
        stop_job(serve)  # SIGTERM to its process group, SIGKILL if it lingers
    outputs["pulse serve"] = serve_log.read_text()

    events = read_events(settings, N_PRODUCED + 2)
    assert len(events) == N_PRODUCED + 2
    impressions = [e for e in events if e.type is EventType.IMPRESSION and e.decision is not None
                   and e.decision.request_id == decision["request_id"]]
    assert len(impressions) == 1 and impressions[0].decision.arm == decision["arm"]
    assert [e.user_id for e in events if e.event_id == "secured-1"] == ["u-secure"]

    lag = pulse(settings, "--verbose", "lag", "--json")
    outputs["pulse lag"] = lag.stdout + lag.stderr
    assert lag.returncode in (0, 1), lag.stderr
    report = orjson.loads(lag.stdout)
    assert report["total"]["lag_messages"] == N_PRODUCED + 2  # the job never ran: everything is lag
    assert all(p["committed_offset"] is None for p in report["partitions"])

    leaked = {name: [s for s in SECRETS if s in text] for name, text in outputs.items()}
    assert not {k: v for k, v in leaked.items() if v}, leaked
    in_files = _files_containing(secured.home, SECRETS)
    # Control: the broker's 0600 properties hold its JAAS passwords, Redis's 0600 auth.conf its password.
    assert set(in_files.pop(str(secured.kafka.config_file.relative_to(secured.home)))) == {
        ADMIN_PASSWORD, SASL_PASSWORD, NOBODY_PASSWORD}
    assert in_files.pop(str((secured.redis.data_dir / "auth.conf").relative_to(secured.home))) == [REDIS_PASSWORD]
    assert not in_files, f"secrets found in {in_files}"
    assert (secured.home / "logs" / "kafka.log").stat().st_size > 0


@pytest.mark.parametrize(("command", "env", "named"), [
    ("produce", {"PULSE_KAFKA_SASL_PASSWORD": "not-the-password"}, "PULSE_KAFKA_SASL_PASSWORD"),
    ("produce", {"PULSE_KAFKA_SASL_USERNAME": "ghost"}, "PULSE_KAFKA_SASL_USERNAME"),
    ("produce", {"PULSE_KAFKA_SSL_CA_FILE": ""}, "PULSE_KAFKA_SSL_CA_FILE"),
    ("produce", {"PULSE_KAFKA_SSL_CA_FILE": "/no/such/ca.pem"}, "PULSE_KAFKA_SSL_CA_FILE"),
    ("lag", {"PULSE_KAFKA_SASL_PASSWORD": "not-the-password"}, "PULSE_KAFKA_SASL_PASSWORD"),
    ("lag", {"PULSE_REDIS_SSL_CA_FILE": ""}, "PULSE_REDIS_SSL_CA_FILE"),
], ids=["wrong-password", "unknown-user", "no-ca", "missing-ca-file", "lag-wrong-password", "lag-no-redis-ca"])
def test_bad_credentials_fail_fast_with_one_line(secured: Secured, command: str, env: dict[str, str],
                                                  named: str) -> None:
    settings = secured.settings()
    args = {"produce": ("produce", "synthetic", "--limit", "5"), "lag": ("lag", "--json")}[command]
    started = time.monotonic()
    result = pulse(settings, *args, **env)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert elapsed < FAIL_FAST_S, f"{elapsed:.1f}s"
    assert not any(s in result.stdout + result.stderr for s in SECRETS)


def test_job_over_sasl_ssl_and_tls(secured: Secured, tmp_path: Path) -> None:
    """The job reads SASL_SSL, writes its DLQ/sessions/item snapshots there and Redis over TLS: counts exact, lag 0."""
    settings = secured.settings(checkpoint_dir=tmp_path / "checkpoints", checkpoint_interval_ms=1000)
    assert settings.kafka_java_properties()["security.protocol"] == "SASL_SSL"
    ensure_topics(settings)
    events = list(open_source("synthetic:users=40,items=100", seed=21, limit=N_PRODUCED))
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
    assert producer.report.produced == N_PRODUCED
    want: dict[str, dict[str, int]] = {}
    for event in events:
        counts = want.setdefault(event.user_id, {})
        counts[event.type.value] = counts.get(event.type.value, 0) + 1
    client, keys = tls_redis(settings), RedisKeys(settings.redis_prefix)

    def stored() -> dict[str, Any]:
        found = {user: user_part(client, keys, user, "counts") for user in want}
        return {user: envelope.payload["counts"] if envelope else None for user, envelope in found.items()}

    with LagProbe(settings) as probe:
        run_job_until(settings, lambda: probe.measure().lag_messages == 0 and stored() == want,
                      log=tmp_path / "job.log", timeout_s=300)
    assert stored() == want
    lag = pulse(settings, "lag", "--json")
    report = orjson.loads(lag.stdout)
    assert report["total"]["lag_messages"] == 0, lag.stderr
    assert report["total"]["committed_offset"] == report["total"]["high_watermark"] == N_PRODUCED


def test_java_properties_drive_a_flink_source_and_exactly_once_sink(
    secured: Secured, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``Settings.kafka_java_properties()`` given to the job's own source and sink builders (flink_jobs.runtime)."""
    from pyflink.common import Types

    from bench import count_job
    from flink_jobs.runtime import RuntimeOptions, kafka_sink, kafka_source, make_environment
    from tests.integration.test_flink_runtime import KAFKA_CONNECTOR_JAR

    os.environ.setdefault("FLINK_LOG_DIR", str(tmp_path_factory.mktemp("flink-log")))
    settings = secured.settings()
    java = settings.kafka_java_properties()
    assert "ssl.keystore.key" in java and "ssl.key.password" in java  # mutual TLS with an encrypted key too
    out_topic = f"secured-out-{uuid.uuid4().hex[:8]}"
    ensure_topics(settings, [settings.topic_events, out_topic])
    expected: dict[str, int] = {}
    with EventProducer(settings) as producer:
        for event in open_source("synthetic:users=30,items=50", seed=5, limit=500):
            producer.send(event)
            expected[event.user_id] = expected.get(event.user_id, 0) + 1
    assert producer.report.produced == 500

    env = make_environment(RuntimeOptions(jars=(KAFKA_CONNECTOR_JAR,), parallelism=1, execution_mode="thread",
                                          checkpoint_interval_ms=1_000, checkpoint_dir=tmp_path_factory.mktemp("cp"),
                                          restart_attempts=0))
    source = kafka_source(settings.kafka_bootstrap, settings.topic_events, f"secured-{uuid.uuid4().hex[:6]}",
                          bounded=True, properties=java)
    counts = count_job.build(env, source)
    counts.map(lambda row: f"{row[0]},{row[1]}".encode(), output_type=Types.PRIMITIVE_ARRAY(Types.BYTE())).sink_to(
        kafka_sink(settings.kafka_bootstrap, out_topic, exactly_once=True,
                   transactional_id_prefix=f"secured-{uuid.uuid4().hex[:6]}", properties=java)
    )
    env.execute("secured-count")

    consumer = Consumer(settings.kafka_config(**{
        "group.id": f"t-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
        "isolation.level": "read_committed", "enable.auto.commit": False,
    }))
    consumer.subscribe([out_topic])
    final: dict[str, int] = {}
    rows = 0
    deadline = time.monotonic() + 60
    try:
        while rows < 500 and time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    user, count = message.value().decode().split(",")
                    final[user], rows = max(final.get(user, 0), int(count)), rows + 1
    finally:
        consumer.close()
    assert rows == 500 and final == expected
