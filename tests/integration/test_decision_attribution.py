"""Decisions attributed by the job: each decision under an experiment is an exposure, its click a credit.

The real shim answers 2,000 ``/v1/decisions`` (the default control/treatment split) and logs them
as impressions; planted clicks come back through ``/v1/events:batch`` with the decision's request
id (plus clicks naming no decision and one decision clicked twice). The job (`--bounded`, real
Kafka, Redis, Flink) counts them per variant exactly; ``pulse experiments report`` reads them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import redis as redis_lib
from typer.testing import CliRunner

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from producers.topics import ensure_topics
from pulse.cli import app
from schemas import EventCodec, EventType
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import run_bounded_job, tail
from tests.integration.test_job import read_topic
from tests.integration.test_ope_own_logs import T0, TS_TABLE, UNKNOWN_CLICKS, _serve

pytestmark = pytest.mark.flink_job


def test_every_decision_and_its_click_is_counted_once_per_variant(settings: Settings, redis_url: str,
                                                                   tmp_path: Path) -> None:
    settings = settings.model_copy(update={"bandit_policy": "ts", "serving_control_share": 0.25,
                                           "serving_log_served": False, "job_attribution": "on",
                                           "checkpoint_dir": tmp_path / "checkpoints"})
    ensure_topics(settings)
    keys = RedisKeys(settings.redis_prefix)
    payload = {"policy": "ts", "scope": "global", "stat_names": ["successes", "failures"], "arms": TS_TABLE,
               "hyperparameters": {"prior_alpha": 1.0, "prior_beta": 1.0}}
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([(keys.bandit("ts", "global"), T0, payload)])
    decisions, clicked = _serve(settings)
    experiment = decisions[0]["experiment"]
    exposures = Counter(d["variant"] for d in decisions)
    credited = Counter(d["variant"] for d in decisions if d["request_id"] in clicked)
    # Every decision answered is an impression on the topic (else the shim lost it, not the job).
    codec = EventCodec()
    logged = [codec.decode(value) for value in read_topic(settings, settings.topic_events,
                                                         len(decisions) + len(clicked) + UNKNOWN_CLICKS + 1)]
    assert Counter(e.context["variant"] for e in logged if e.type is EventType.IMPRESSION) == exposures

    run_bounded_job(settings, log=tmp_path / "job.log")

    stored = Envelope.from_fields(redis_lib.Redis.from_url(redis_url).hgetall(keys.experiment(experiment)))
    got = stored.payload["variants"]
    assert {v: c["exposures"] for v, c in got.items()} == dict(exposures), tail(tmp_path / "job.log")
    assert {v: (c["clicked"], c["clicks"]) for v, c in got.items()} == {v: (credited[v], credited[v])
                                                                       for v in exposures}
    report = CliRunner().invoke(app, ["experiments", "report", experiment], env=settings.to_env())
    assert report.exit_code == 0, report.output
    print(f"\n{report.stdout}")
