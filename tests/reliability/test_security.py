"""Secrets stay secret in a full run (issue #8, security).

Redis requires a password, the serving shim requires API keys, and every piece runs as a user
runs it — the job (`pulse job run --bounded`), the shim (`pulse serve`) and the probe
(`pulse lag --json`) as their own processes, verbose where they have a flag. Everything they
print, every log file they leave (the job's, Flink's under ``<home>/logs/flink``, Redis's) and
the settings' own renderings must not contain a configured secret, while the run demonstrably
worked with those secrets: scores are in Redis (written with AUTH; a client without the password
is refused), the shim answers with a key and 401 without, the probe read Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from infra.local.process import free_port
from infra.local.redis import RedisServer
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas.redis_keys import RedisKeys
from serving.sync_reads import user_part
from tests.conftest import isolated_settings
from tests.integration import jobs
from tests.integration.jobs import run_bounded_job, stop_job, tail

pytestmark = [pytest.mark.integration, pytest.mark.flink_job]

N_EVENTS = 400
# Random per run: a constant could sit in some file by coincidence, or be missed by one.
REDIS_PASSWORD = f"redis-pw-{uuid.uuid4().hex}"
API_KEYS = (f"api-key-a-{uuid.uuid4().hex}", f"api-key-b-{uuid.uuid4().hex}")
SECRETS = (REDIS_PASSWORD, *API_KEYS)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home of our own (logs, Flink logs, checkpoints), sharing the resolved jars."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "jars").symlink_to(REPO_ROOT / ".local" / "jars", target_is_directory=True)
    return home


@pytest.fixture
def secure_redis(home: Path) -> Iterator[RedisServer]:
    server = RedisServer(home, free_port(), password=REDIS_PASSWORD)
    server.start(timeout_s=30)
    try:
        yield server
    finally:
        server.process.stop()


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith("PULSE_") and k not in ("PYFLINK_GATEWAY_DISABLED", "FLINK_LOG_DIR")}
    return {**inherited, **settings.to_env(), **extra}


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"`pulse serve` exited {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"`pulse serve` did not answer {url} in {timeout_s}s:\n{tail(log)}")


def _files_containing(root: Path, needles: tuple[str, ...]) -> dict[str, list[str]]:
    """Files under ``root`` (symlinks not followed) whose bytes contain a needle -> which ones."""
    found: dict[str, list[str]] = {}
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        hits = [n for n in needles if n.encode() in data]
        if hits:
            found[str(path.relative_to(root))] = hits
    return found


def test_full_run_never_prints_a_configured_secret(
    kafka_bootstrap: str, secure_redis: RedisServer, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job with debug logging too: the more it says, the more chances to say a secret.
    monkeypatch.setattr(jobs, "job_command", lambda *args: [sys.executable, "-m", "pulse", "--verbose", "job", "run",
                                                             *args])
    settings = isolated_settings(
        kafka_bootstrap, secure_redis.url, home=home,
        redis_password=REDIS_PASSWORD, serving_api_keys=",".join(API_KEYS),
        checkpoint_interval_ms=1000, metrics_port=free_port(),
    )
    # Positive control: the secrets really are configured (and handed to child processes).
    env_of_children = settings.to_env()
    assert env_of_children["PULSE_REDIS_PASSWORD"] == REDIS_PASSWORD
    assert env_of_children["PULSE_SERVING_API_KEYS"] == ",".join(API_KEYS)
    outputs: dict[str, str] = {
        "repr(settings)": repr(settings),
        "str(settings)": str(settings),
        "settings.model_dump_json()": settings.model_dump_json(),
        "settings.model_dump()": str(settings.model_dump()),
    }

    # Redis refuses a client without the password.
    anonymous = redis_lib.Redis.from_url(secure_redis.url, socket_timeout=5)
    with pytest.raises(redis_lib.exceptions.AuthenticationError):
        anonymous.ping()
    authed = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=5, **settings.redis_client_kwargs())
    assert authed.ping()

    # Events in, the job over them to completion.
    ensure_topics(settings)
    events = list(open_source("synthetic:users=40,items=200", seed=8, limit=N_EVENTS))
    with EventProducer(settings) as producer:
        for event in events:
            producer.send(event)
    assert producer.report.produced == N_EVENTS
    job_log = tmp_path / "job.log"
    run_bounded_job(settings, log=job_log, timeout_s=120)

    keys = RedisKeys(settings.redis_prefix)
    written = list(authed.scan_iter(match=f"{settings.redis_prefix}:*", count=1000))
    users = sorted({e.user_id for e in events})
    with_recs = [u for u in users if user_part(authed, keys, u, "recs") is not None]
    assert written, "the job wrote nothing to Redis"
    assert with_recs, f"no user has scores; job log:\n{tail(job_log)}"

    # The serving shim, as `pulse serve` (verbose), with and without a key.
    port = free_port()
    serve_log = tmp_path / "serve.log"
    with serve_log.open("wb") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "pulse", "--verbose", "serve"], cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
            env=_env(settings, PULSE_SERVING_PORT=str(port)), start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/healthz", serve, serve_log)
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text  # the shim authenticated to Redis
        url = f"{base}/v1/users/{with_recs[0]}/recommendations"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer not-a-key"}, timeout=10).status_code == 401
        for key in API_KEYS:
            answer = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json()["items"], answer.text
            outputs[f"GET recommendations ({key[:10]}…)"] = answer.text
        outputs["GET /metrics"] = httpx.get(f"{base}/metrics", timeout=10).text
        outputs["GET /openapi.json"] = httpx.get(f"{base}/openapi.json", timeout=10).text
    finally:
        stop_job(serve)  # SIGTERM to its process group, SIGKILL if it lingers

    # The probe, given the password inside PULSE_REDIS_URL this time (moved out of the URL by Settings).
    url_with_password = secure_redis.url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
    lag_env = _env(settings, PULSE_REDIS_URL=url_with_password)
    del lag_env["PULSE_REDIS_PASSWORD"]
    lag = subprocess.run([sys.executable, "-m", "pulse", "--verbose", "lag", "--json"], cwd=REPO_ROOT,
                         env=lag_env, capture_output=True, text=True, timeout=60, check=False)
    assert lag.returncode == 0, lag.stdout + lag.stderr
    report = json.loads(lag.stdout)
    assert report["freshness"]["sampled_keys"] > 0, report  # it read the scores, so it authenticated
    outputs["pulse lag stdout"] = lag.stdout
    outputs["pulse lag stderr"] = lag.stderr
    outputs["repr(Settings(redis_url=<with password>))"] = repr(Settings(redis_url=url_with_password))

    # Nothing printed, logged or rendered carries a secret.
    leaked = {name: [s for s in SECRETS if s in text] for name, text in outputs.items()}
    assert not {k: v for k, v in leaked.items() if v}, leaked
    flink_logs = list((home / "logs" / "flink").glob("*"))
    assert flink_logs, "Flink wrote no logs where the job puts them"
    assert (home / "logs" / "redis.log").is_file()
    assert job_log.stat().st_size > 0
    in_files = _files_containing(tmp_path, SECRETS)
    # Control: the one file that must hold the password (0600, so `ps` never shows it) is found.
    auth_conf = str((secure_redis.data_dir / "auth.conf").relative_to(tmp_path))
    assert in_files.pop(auth_conf, None) == [REDIS_PASSWORD]
    assert not in_files, f"secrets found in {in_files}"


KAFKA_SECRETS = (f"sasl-pw-{uuid.uuid4().hex}", f"key-pw-{uuid.uuid4().hex}")


def test_kafka_secrets_stay_out_of_settings_and_command_output(tmp_path: Path) -> None:
    """The SASL password and the client key's passphrase (issue 21) follow the same rules.

    A full run over SASL_SSL, with its logs scanned, is tests/integration/test_secured_services.py.
    """
    from infra.local.process import free_port as closed_port  # nothing listens there once the socket closes

    settings = Settings(
        home=tmp_path, kafka_bootstrap=f"127.0.0.1:{closed_port()}", kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="app", kafka_sasl_password=KAFKA_SECRETS[0], kafka_ssl_key_password=KAFKA_SECRETS[1],
    )
    assert settings.kafka_config()["sasl.password"] == KAFKA_SECRETS[0]  # configured, and handed to clients
    assert settings.to_env()["PULSE_KAFKA_SSL_KEY_PASSWORD"] == KAFKA_SECRETS[1]
    outputs = {"repr": repr(settings), "str": str(settings), "json": settings.model_dump_json(),
               "dump": str(settings.model_dump())}
    for args in (("produce", "synthetic", "--limit", "1"), ("lag", "--json")):
        run = subprocess.run([sys.executable, "-m", "pulse", "--verbose", *args], cwd=REPO_ROOT, env=_env(settings),
                             capture_output=True, text=True, timeout=60, check=False)
        assert run.returncode != 0 and "PULSE_KAFKA_BOOTSTRAP" in run.stderr, run.stderr  # it did try to connect
        outputs[" ".join(args)] = run.stdout + run.stderr
    leaked = {name: [s for s in KAFKA_SECRETS if s in text] for name, text in outputs.items()}
    assert not {k: v for k, v in leaked.items() if v}, leaked
    assert not _files_containing(tmp_path, KAFKA_SECRETS)
