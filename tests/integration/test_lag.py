"""`pulse lag`, `pulse exporter` and the job's Prometheus reporter against real Kafka, Redis and the job.

One scenario (module fixture) runs the job once, as a user would:

1. the job is stopped (never ran): N1 events + M malformed records are produced;
   ``pulse lag --json`` must report exactly N1 + M;
2. the job starts: lag must come back to 0 (and the DLQ to exactly M) within the timeout; while
   it runs, its Prometheus endpoint and the exporter are scraped;
3. the job is stopped; N2 more events are produced with event times 600 s later than the
   first ones: ``pulse lag --json`` must report exactly N2, 600 s of event-time lag on every
   partition that holds new records, and the exporter must publish the same numbers.

Timeouts are limits only; nothing asserts on how long anything took.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import REPO_ROOT, Settings
from infra.local.process import free_port
from producers.producer import EventProducer
from producers.topics import ensure_topics
from pulse.lag import LagProbe
from schemas.events import Event, EventType
from tests.conftest import isolated_settings
from tests.integration.jobs import start_job, stop_job, tail
from tests.unit.test_lag_observability import (
    load_dashboard,
    load_rules,
    metric_names_in_dashboard,
    metric_names_in_rules,
    serving_metric_names,
)

pytestmark = pytest.mark.flink_job

N1 = 400
M = 7
N2 = 300
USERS = 40
SHIFT_MS = 600_000
TIMEOUT_S = 420

#: The job's Python metrics that must show up in the scrape with non-zero values once events flowed.
PYTHON_COUNTERS = ("events_decoded", "dead_letters", "events_processed", "redis_keys_written")


@dataclass
class Scenario:
    settings: Settings
    before_job: dict[str, Any]
    drained: dict[str, Any]
    stopped_lag: tuple[dict[str, Any], str, dict[str, Any]]  # CLI, exporter scrape, CLI again
    job_scrape: str
    exporter_scrape_running: str
    log: Path
    notes: list[str] = field(default_factory=list)


def events(n: int, event_time_ms: int, seed: str) -> list[Event]:
    kinds = [EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE]
    return [
        Event(event_id=f"{seed}-{i}", type=kinds[i % len(kinds)], user_id=f"u{i % USERS}",
              event_time_ms=event_time_ms, item_id=f"i{i % 23}")
        for i in range(n)
    ]


def produce(settings: Settings, batch: list[Event], malformed: int = 0) -> None:
    with EventProducer(settings) as producer:
        for event in batch:
            producer.send(event)
        for i in range(malformed):
            producer.send_raw(f"bad{i}".encode(), b"not framed avro")
    assert producer.report.produced == len(batch) + malformed, producer.report


def env_of(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


def pulse_lag_json(settings: Settings, *flags: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "pulse", "lag", "--json", *flags], cwd=REPO_ROOT,
                          env=env_of(settings), capture_output=True, timeout=120, check=False)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read().decode()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout_s}s" + (f"\n{tail(log)}" if log else ""))
        time.sleep(1.0)


def samples(text: str) -> list[Any]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def python_counters(text: str) -> dict[str, float]:
    """The job's Python counters in a scrape, summed over labels (reason, type, subtask)."""
    found = dict.fromkeys(PYTHON_COUNTERS, 0.0)
    for s in samples(text):
        for name in PYTHON_COUNTERS:
            if s.name.endswith(f"_{name}"):
                found[name] += s.value
    return found


def try_scrape(url: str) -> str | None:
    try:
        return scrape(url)
    except OSError:
        return None


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    tmp = tmp_path_factory.mktemp("lag")
    settings = isolated_settings(
        kafka_bootstrap,
        redis_url,
        checkpoint_dir=tmp / "checkpoints",
        checkpoint_interval_ms=1000,
        metrics_port=free_port(),
        exporter_port=free_port(),
        freshness_sample=100_000,  # every score key of this test: the sample is the whole set
    )
    ensure_topics(settings)
    base_ms = time.time_ns() // 1_000_000 - 3_600_000
    log = tmp / "job.log"
    exporter_log = tmp / "exporter.log"
    exporter_url = f"http://127.0.0.1:{settings.exporter_port}/metrics"
    job_url = f"http://127.0.0.1:{settings.metrics_port}/metrics"

    # 1. The job is stopped: everything produced is lag.
    produce(settings, events(N1, base_ms, "a"), malformed=M)
    _, before_job = pulse_lag_json(settings)

    exporter = subprocess.Popen([sys.executable, "-m", "pulse", "exporter"], cwd=REPO_ROOT, env=env_of(settings),
                                stdout=exporter_log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    job = start_job(settings, "--restore", "none", log=log)
    try:
        # 2. The job runs: lag drains to 0, the dead letters are committed, the Python counters count.
        with LagProbe(settings) as probe:
            def drained() -> bool:
                assert job.poll() is None, f"job exited {job.returncode}:\n{tail(log)}"
                report = probe.measure()
                return report.lag_messages == 0 and report.dead_letters.total == M

            wait_for("lag back to 0 and every dead letter committed", drained, TIMEOUT_S, log)

        def counters_counted() -> bool:
            text = try_scrape(job_url)
            return text is not None and all(value > 0 for value in python_counters(text).values())

        wait_for(f"non-zero Python counters at {job_url}", counters_counted, TIMEOUT_S, log)
        job_scrape = scrape(job_url)
        wait_for(f"exporter at {exporter_url}", lambda: try_scrape(exporter_url) is not None, 120, exporter_log)
        exporter_scrape_running = scrape(exporter_url)
    finally:
        stop_job(job)
    _, drained_report = pulse_lag_json(settings)

    # 3. The job is stopped again: exactly the new records are lag, 600 s of event time behind.
    produce(settings, events(N2, base_ms + SHIFT_MS, "b"))
    try:
        cli_before = pulse_lag_json(settings)[1]
        exporter_text = scrape(exporter_url)
        cli_after = pulse_lag_json(settings)[1]
    finally:
        stop_job(exporter)
    (tmp / "job-scrape.txt").write_text(job_scrape)
    yield Scenario(settings, before_job, drained_report, (cli_before, exporter_text, cli_after), job_scrape,
                   exporter_scrape_running, log)


def test_stopped_job_lag_is_exactly_what_was_produced(scenario: Scenario) -> None:
    report = scenario.before_job
    assert report["total"]["lag_messages"] == N1 + M
    assert sum(p["lag_messages"] for p in report["partitions"]) == N1 + M
    assert all(p["committed_offset"] is None for p in report["partitions"])
    assert report["group"] == scenario.settings.job_group_id

    cli, _, _ = scenario.stopped_lag
    assert cli["total"]["lag_messages"] == N2
    assert all(p["committed_offset"] is not None for p in cli["partitions"])
    for p in cli["partitions"]:
        assert p["lag_messages"] == p["high_watermark"] - p["committed_offset"]
        # Old records (base time) consumed, new ones (base + 600 s) pending: exactly 600 s behind.
        assert p["lag_seconds"] == (SHIFT_MS / 1000 if p["lag_messages"] else 0.0), p
    assert cli["total"]["lag_seconds"] == SHIFT_MS / 1000


def test_lag_returns_to_zero_when_the_job_runs(scenario: Scenario) -> None:
    report = scenario.drained
    assert report["total"]["lag_messages"] == 0
    assert report["total"]["lag_seconds"] == 0.0
    assert report["total"]["committed_offset"] == report["total"]["high_watermark"] == N1 + M
    assert report["dead_letters"]["total"] == M
    assert report["freshness"]["sampled_keys"] > 0
    assert report["ok"] is True


def test_thresholds_set_the_exit_code(scenario: Scenario) -> None:
    code, report = pulse_lag_json(scenario.settings, "--max-lag-messages", str(N2 - 1))
    assert code == 1 and report["breaches"] and not report["ok"]
    code, report = pulse_lag_json(scenario.settings, "--max-lag-messages", str(N2), "--max-lag-seconds", "600")
    assert code == 0 and report["ok"], report["breaches"]
    # Scores were made from events an hour old: a 1-minute freshness limit is breached.
    code, report = pulse_lag_json(scenario.settings, "--max-freshness-ms", "60000")
    assert code == 1 and any("freshness" in b for b in report["breaches"])


def test_exporter_gauges_equal_the_cli(scenario: Scenario) -> None:
    cli, text, cli_later = scenario.stopped_lag
    by_name: dict[str, list[Any]] = {}
    for s in samples(text):
        by_name.setdefault(s.name, []).append(s)
    assert by_name["pulse_exporter_up"][0].value == 1
    for p in cli["partitions"]:
        labels = {"topic": cli["topic"], "group": cli["group"], "partition": str(p["partition"])}
        got = {name: next(s.value for s in by_name[name] if s.labels == labels)
               for name in ("pulse_lag_messages", "pulse_lag_seconds", "pulse_consumer_committed_offset",
                            "pulse_log_end_offset")}
        assert got == {
            "pulse_lag_messages": p["lag_messages"],
            "pulse_lag_seconds": p["lag_seconds"],
            "pulse_consumer_committed_offset": p["committed_offset"],
            "pulse_log_end_offset": p["high_watermark"],
        }
    assert sum(s.value for s in by_name["pulse_lag_messages"]) == cli["total"]["lag_messages"] == N2
    assert max(s.value for s in by_name["pulse_lag_seconds"]) == cli["total"]["lag_seconds"]
    assert by_name["pulse_dlq_records_total"][0].value == cli["dead_letters"]["total"] == M
    assert by_name["pulse_score_keys_sampled"][0].value == cli["freshness"]["sampled_keys"]
    # No score was written in between, so ages only grow: the scrape sits between the two CLI runs.
    fresh = {s.labels["stat"]: s.value * 1000 for s in by_name["pulse_score_freshness_seconds"]}
    for stat in ("newest", "median", "oldest"):
        assert cli["freshness"][f"{stat}_age_ms"] <= fresh[stat] <= cli_later["freshness"][f"{stat}_age_ms"]


def test_job_prometheus_endpoint_has_the_python_metrics(scenario: Scenario) -> None:
    found = python_counters(scenario.job_scrape)
    assert found["events_decoded"] == N1, found
    assert found["dead_letters"] == M, found
    assert found["events_processed"] == N1, found
    assert found["redis_keys_written"] > 0, found
    # The good events were read in the JVM; only the malformed ones went on to the Python codec.
    handed = sum(s.value for s in samples(scenario.job_scrape) if s.name.endswith("_events_handed_to_codec"))
    assert handed == M, handed
    names = {s.name for s in samples(scenario.job_scrape)}
    assert "flink_jobmanager_job_numRestarts" in names
    assert "flink_taskmanager_job_task_operator_item_replica_size" in names


def referenced_metrics() -> set[str]:
    """Every metric name the alert rules and the Grafana dashboard use."""
    return metric_names_in_rules(load_rules()) | metric_names_in_dashboard(load_dashboard())


def test_every_metric_of_the_dashboard_and_alerts_is_scraped(scenario: Scenario) -> None:
    scraped = set()
    for text in (scenario.job_scrape, scenario.exporter_scrape_running):
        for family in text_string_to_metric_families(text):
            scraped |= {family.name} | {s.name for s in family.samples}
    # The serving shim's series come from its own registry (checked against the dashboard in
    # tests/unit/test_lag_observability.py; its /metrics endpoint in test_serving.py), not from these scrapes.
    wanted = referenced_metrics() - serving_metric_names()
    assert wanted, "no metric names found in infra/observability"
    missing = sorted(wanted - scraped)
    assert not missing, f"referenced but not in any scrape: {missing}"
