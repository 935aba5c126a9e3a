"""An A/B test and an A/A test read back as reports: the planted lift is found, the null one is not.

Real Kafka, Redis and the job (`pulse job run --bounded`): served lists and their outcomes (the
users click variant B's lists 30% more often in the A/B test, equally often in the A/A test),
about 50,000 records per test, attributed by the job; then `pulse experiments report` for each
(issue #18, acceptance line 1).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from config import Settings
from config.experiments import Experiment, Variant
from producers.producer import EventProducer
from producers.topics import ensure_topics
from pulse.cli import app
from schemas import ServedListCodec
from tests.integration.jobs import run_bounded_job
from tests.integration.test_attribution import planted

pytestmark = pytest.mark.flink_job

N_LISTS = 23_000  # with their views, clicks and purchases: over 50,000 records per test


def experiment(name: str) -> Experiment:
    return Experiment(name=name, surface="recommendations", salt=name,
                      variants=[Variant(name="A", policy="mf", share=0.5), Variant(name="B", policy="mf", share=0.5)])


def report(settings: Settings, definition: Experiment) -> tuple[str, dict]:
    env = settings.model_copy(update={"experiments": (definition,)}).to_env()
    runner = CliRunner()
    text = runner.invoke(app, ["experiments", "report", definition.name], env=env)
    as_json = runner.invoke(app, ["experiments", "report", definition.name, "--json"], env=env)
    assert text.exit_code == 0 and as_json.exit_code == 0, (text.output, as_json.output)
    return text.stdout, json.loads(as_json.stdout)


def test_a_planted_lift_is_found_and_an_aa_test_shows_none(settings: Settings, tmp_path: Path) -> None:
    ab, aa = experiment("home-ab"), experiment("home-aa")
    settings = settings.model_copy(update={"experiments": (ab,), "checkpoint_dir": tmp_path / "checkpoints"})
    ensure_topics(settings)
    lists, events, sizes = [], [], {}
    for definition, ctr, seed in ((ab, {"A": 0.10, "B": 0.13}, 1), (aa, {"A": 0.10, "B": 0.10}, 2)):
        served, outcomes, _ = planted(N_LISTS, seed=seed, experiment=definition, ctr=ctr, n_users=5_000)
        lists += served
        events += outcomes
        sizes[definition.name] = len(served) + len(outcomes)
    codec, failed, producer = ServedListCodec(), [], Producer(settings.kafka_config())
    for served in lists:
        producer.produce(settings.topic_served, key=served.user_id, value=codec.encode(served),
                         on_delivery=lambda err, _: failed.append(err) if err else None)
        producer.poll(0)
    assert producer.flush(60) == 0 and failed == []
    with EventProducer(settings) as events_out:
        for _ in events_out.send_all(iter(events)):
            pass
    assert events_out.report.produced == len(events)

    run_bounded_job(settings, log=tmp_path / "job.log", timeout_s=420)

    ab_text, ab_json = report(settings, ab)
    aa_text, aa_json = report(settings, aa)
    print(f"\nA/B ({sizes['home-ab']:,} records):\n{ab_text}\nA/A ({sizes['home-aa']:,} records):\n{aa_text}")
    assert all(size >= 50_000 for size in sizes.values()), sizes
    assert "interval excludes 0" in ab_text and "interval includes 0" in aa_text
    for body, differs in ((ab_json, True), (aa_json, False)):
        assert sum(v["exposures"] for v in body["variants"]) == N_LISTS, body
        (b,) = [v for v in body["variants"] if v["variant"] == "B"]
        assert b["vs_control"]["excludes_zero"] is differs, b
