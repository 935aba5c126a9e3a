"""pulse/reach.py against closed ports and a listener that is not Kafka (no services needed)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import typer

from config import Settings
from infra.local.process import free_port
from pulse.reach import kafka_problem, redis_problem, require


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (like a proxy in front of nothing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_a_closed_kafka_port_names_the_address_and_the_setting() -> None:
    port = free_port()
    problem = kafka_problem(Settings(kafka_bootstrap=f"127.0.0.1:{port}"))
    assert problem == f"cannot reach Kafka at 127.0.0.1:{port} (PULSE_KAFKA_BOOTSTRAP)"


def test_the_local_services_address_points_to_pulse_up() -> None:
    port = free_port()
    problem = kafka_problem(Settings(kafka_bootstrap=f"localhost:{port}", kafka_port=port))
    assert problem is not None and problem.endswith("; start local services with 'pulse up'")
    redis_port = free_port()
    problem = redis_problem(Settings(redis_url=f"redis://127.0.0.1:{redis_port}/0", redis_port=redis_port))
    assert problem == (f"cannot reach Redis at redis://127.0.0.1:{redis_port}/0 (PULSE_REDIS_URL); "
                       "start local services with 'pulse up'")


def test_a_listener_that_is_not_kafka_or_redis_is_unreachable_within_the_timeout(silent_listener: int) -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{silent_listener}", redis_url=f"redis://127.0.0.1:{silent_listener}")
    started = time.monotonic()
    assert kafka_problem(settings, timeout_s=1.0) is not None
    assert redis_problem(settings, timeout_s=1.0) is not None
    assert time.monotonic() - started < 10


def test_a_url_that_is_not_redis_is_named() -> None:
    problem = redis_problem(Settings(redis_url="http://127.0.0.1:1"))
    assert problem is not None and "PULSE_REDIS_URL" in problem


def test_require_raises_the_commands_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(typer.Exit) as exit_info:
        require(settings, kafka=True, redis=True, code=2)
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot reach Kafka")
    with pytest.raises(typer.Exit):
        require(settings, redis=True)
    assert "cannot reach Redis" in capsys.readouterr().err
    require(settings)  # nothing needed, nothing checked
