"""Fixtures shared by every test tier. Service fixtures come from tests/services.py."""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from tests.services import Endpoints, service_endpoints


def _shared_data() -> Path:
    """The real datasets: ``PULSE_SHARED_DATA``, else ``../shared/data`` beside this checkout, else
    beside the local checkout this one was cloned from (a clean clone made in another folder)."""
    if os.environ.get("PULSE_SHARED_DATA"):
        return Path(os.environ["PULSE_SHARED_DATA"])
    beside = REPO_ROOT.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    origin = subprocess.run(["git", "-C", str(REPO_ROOT), "config", "--get", "remote.origin.url"],
                            capture_output=True, text=True, check=False).stdout.strip()
    cloned_from = Path(origin).parent / "shared" / "data" if origin.startswith("/") else None
    return cloned_from if cloned_from is not None and cloned_from.is_dir() else beside


SHARED_DATA = _shared_data()

#: JVM options of the Flink JVMs the tests start: PyFlink's local gateway (every `pulse job run`,
#: `pulse archive run`, the demo's job) and the standalone cluster's scripts read ``JVM_ARGS``.
#: A test's job lives seconds to a minute, so the JVM's start is a large part of its CPU: the client
#: compiler only and the serial collector cut a short job's CPU by ~30 % and its wall time by
#: ~15 % (2,000 events, 3 runs each), and the Flink-job tests, run alone, from 1,036 s to 960 s
#: (2026-12-05). Neither changes what a job computes. Kafka's JVMs read their own variable (below),
#: the registry's none. Set ``JVM_ARGS`` to override.
TEST_JVM_ARGS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"
os.environ.setdefault("JVM_ARGS", TEST_JVM_ARGS)
#: Not for the Kafka brokers the tests start (infra/local/kafka.py reads KAFKA_JVM_PERFORMANCE_OPTS):
#: with the same options a broker's start took 4.6-5.2 -> 2.6-2.7 s of CPU (2026-12-07), but the
#: one clean clone that then hung (test_serving_batch: the server's producer delivered nothing to
#: its restarted broker for 10 minutes) had them, and the cause is not known; left at G1 until it is.


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real datasets). CI always has it; elsewhere tests skip with the reason."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI must have the shared data folder at {SHARED_DATA}")
        pytest.skip(f"shared data folder {SHARED_DATA} is not on this machine (set PULSE_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    with service_endpoints() as found:
        yield found


@pytest.fixture(scope="session")
def kafka_bootstrap(endpoints: Endpoints) -> str:
    return endpoints.kafka_bootstrap


@pytest.fixture(scope="session")
def redis_url(endpoints: Endpoints) -> str:
    return endpoints.redis_url


def isolated_settings(kafka_bootstrap: str, redis_url: str, **extra: Any) -> Settings:
    """Settings whose topics, consumer groups and Redis prefix belong to one test alone.

    Every name a job reads or writes must be unique: a shared item-snapshot topic would let one
    test's job start from item parameters another test's job learned.
    """
    suffix = uuid.uuid4().hex[:8]
    # Not the user's <home>/checkpoints: a later `pulse job run` or `make demo` must not find a test's job there.
    extra.setdefault("checkpoint_dir", Path(tempfile.gettempdir()) / "pulse-test-checkpoints")
    return Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic_events=f"events-{suffix}",
        topic_items=f"items-{suffix}",
        topic_dlq=f"events.dlq-{suffix}",
        topic_sessions=f"sessions-{suffix}",
        topic_item_params=f"items.params-{suffix}",
        topic_served=f"served-{suffix}",
        redis_prefix=f"pulse-test-{suffix}",
        job_group_id=f"pulse-job-{suffix}",
        job_name=f"pulse-test-{suffix}",
        **extra,
    )


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str) -> Settings:
    """Settings pointing at the test services, with names unique to this test."""
    return isolated_settings(kafka_bootstrap, redis_url)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis_lib.Redis]:
    client = redis_lib.Redis.from_url(redis_url)
    yield client
    client.close()


#: Modules that take longest (setup and tests, seconds on 2 cores, `--durations`), longest first.
LONGEST_FIRST = (
    "tests/reliability/test_faults.py",  # ~250
    "tests/integration/test_archive.py",  # ~190
    "tests/reliability/test_cached_state.py",  # ~155
    "tests/integration/test_lag.py",  # ~120
    "tests/reliability/test_rescale.py",  # ~110
    "tests/integration/test_demo.py",  # ~105
    "tests/integration/test_secured_services.py",  # ~95
    "tests/integration/test_cli_services.py",  # ~90
    "tests/integration/test_archive_backfill.py",  # ~85
    "tests/integration/test_job_quality.py",  # ~80
    "tests/integration/test_job_recovery.py",  # ~80
)


def _start_rank(nodeid: str) -> int:
    """Where a test's module starts: the longest first, then the other service tests, then the rest."""
    module = nodeid.split("::", 1)[0]
    if module in LONGEST_FIRST:
        return LONGEST_FIRST.index(module)
    return len(LONGEST_FIRST) + (0 if module.startswith(("tests/integration/", "tests/reliability/")) else 1)


#: Modules that share the session's standalone Flink cluster (tests/reliability/conftest.py): one
#: scope for xdist, so one worker starts the cluster once instead of each worker that draws one of them.
SHARED_FLINK_CLUSTER = (
    "tests/reliability/test_faults.py",
    "tests/reliability/test_cached_state.py",
    "tests/reliability/test_rescale.py",
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the modules of :data:`SHARED_FLINK_CLUSTER` as one scope."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneClusterScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.split("::", 1)[0] in SHARED_FLINK_CLUSTER:
                return "tests/reliability: the shared Flink cluster"
            return super()._split_scope(nodeid)

    return OneClusterScope(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration is marked ``integration``; node ids must be unique.

    `make test` runs two pytest-xdist workers with ``--dist loadscope --no-loadscope-reorder``: a
    module's tests stay on one worker (its module fixtures, e.g. a job shared by its tests, start
    once), and the two workers take modules as they free up, so two Flink jobs may run at once:
    faster in all than one worker running every Flink-job test in order (README "Tests" has the
    figures). No ``xdist_group``: under pytest 9.2, xdist 3.8's ``--dist loadgroup`` ignores it
    (pytest-xdist issue 1386).
    """
    for item in items:
        if "tests/integration" in str(item.path):
            item.add_marker(pytest.mark.integration)
    # The longest modules first, the many short ones (unit tests, doctests) last to fill the tail:
    # xdist hands out modules in this order (`--no-loadscope-reorder`), so the run ends when the
    # last short module does, not a 4-minute module started last on one worker.
    if gone := [module for module in LONGEST_FIRST + SHARED_FLINK_CLUSTER if not (REPO_ROOT / module).is_file()]:
        raise pytest.UsageError(f"tests/conftest.py names test modules that do not exist: {gone}")
    items.sort(key=lambda item: _start_rank(item.nodeid))
    # xdist schedules by node id: a second test with the same id would never run, silently.
    twins = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if twins:
        raise pytest.UsageError(f"tests share a node id, so pytest-xdist would run only one of each: {twins}")
