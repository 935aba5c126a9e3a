"""``pulse experiments report`` and the exporter's experiment gauges on results in a real Redis (issue #18, point 4).

The job's attribution writes one envelope per experiment, ``<prefix>:experiment:<name>``; here
the payload is planted the way the job writes it (through ``flink_jobs.redis_writer.RedisWriter``)
with counts drawn from seeded simulated users: variant B's lists are clicked 30% more often in one
experiment, and not at all more often in an A/A experiment of the same size. The real CLI reads
them through the live alias and prints both reports.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import redis as redis_lib
from typer.testing import CliRunner

from config import Settings
from flink_jobs.redis_writer import RedisWriter
from pulse.cli import app
from pulse.commands.exporter import ExperimentCollector
from pulse.model_alias import promote
from schemas.redis_keys import RedisKeys

T0 = 1_796_392_800_000
EXPOSURES = 25_000  # per variant: 50,000 served lists in all


def definition(name: str, policy_b: str = "popularity") -> list[dict[str, Any]]:
    variants = [{"name": "A", "policy": "mf", "share": 0.5}, {"name": "B", "policy": policy_b, "share": 0.5}]
    return [{"name": name, "surface": "recommendations", "variants": variants}]


def simulated_variant(rng: np.random.Generator, exposures: int, ctr: float) -> dict[str, int]:
    """Counts of ``exposures`` simulated lists: a click with ``ctr``, then a cart (25%) and a purchase (50%)."""
    clicked = rng.random(exposures) < ctr
    clicks = clicked * (1 + rng.poisson(0.3, exposures))
    carted = clicked & (rng.random(exposures) < 0.25)
    purchased = carted & (rng.random(exposures) < 0.5)
    purchases = purchased * (1 + rng.poisson(0.1, exposures))
    return {"exposures": exposures, "clicked": int(clicked.sum()), "clicks": int(clicks.sum()),
            "carted": int(carted.sum()), "purchased": int(purchased.sum()), "purchases": int(purchases.sum())}


def plant(settings: Settings, prefix: str, name: str, ctr_b: float, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    variants = {"A": simulated_variant(rng, EXPOSURES, 0.10), "B": simulated_variant(rng, EXPOSURES, ctr_b)}
    payload = {"experiment": name, "window_ms": 1_800_000, "variants": variants}
    with RedisWriter(RedisKeys(prefix), "mf-1", url=settings.redis_url) as writer:
        writer.write_batch([(RedisKeys(prefix).experiment(name), T0, payload)])
    return payload


def report(settings: Settings, experiments: list[dict[str, Any]], *args: str) -> Any:
    env = {"PULSE_REDIS_URL": settings.redis_url, "PULSE_REDIS_PREFIX": settings.redis_prefix,
           "PULSE_EXPERIMENTS": json.dumps(experiments)}
    return CliRunner().invoke(app, ["experiments", "report", *args], env=env)


def test_planted_lift_excludes_zero_and_aa_includes_it(settings: Settings) -> None:
    planted = plant(settings, settings.redis_prefix, "home-recs", ctr_b=0.13, seed=30)
    plant(settings, settings.redis_prefix, "home-aa", ctr_b=0.10, seed=31)

    text = report(settings, definition("home-recs"), "home-recs")
    assert text.exit_code == 0, text.output
    print(f"\n$ pulse experiments report home-recs   # B's lists clicked 30% more often\n{text.stdout}")
    assert "B vs A: +" in text.stdout and "CTR, interval excludes 0" in text.stdout
    data = orjson.loads(report(settings, definition("home-recs"), "home-recs", "--json").stdout)
    a, b = data["variants"]
    assert (a["variant"], a["exposures"], a["clicked"]) == ("A", EXPOSURES, planted["variants"]["A"]["clicked"])
    assert b["purchases"] == planted["variants"]["B"]["purchases"] and a["vs_control"] is None
    versus = b["vs_control"]
    assert versus["excludes_zero"] is True and versus["p_value"] < 1e-6
    assert 0.0 < versus["lift_interval"][0] < 0.3 < versus["lift_interval"][1]
    assert versus["difference_interval"][0] > 0.0

    aa = report(settings, definition("home-aa", policy_b="mf"), "home-aa")
    assert aa.exit_code == 0, aa.output
    print(f"$ pulse experiments report home-aa   # A/A: the same policy on both sides\n{aa.stdout}")
    assert "B vs A: " in aa.stdout and "interval includes 0: no difference shown" in aa.stdout
    data = orjson.loads(report(settings, definition("home-aa", policy_b="mf"), "home-aa", "--json").stdout)
    versus = data["variants"][1]["vs_control"]
    assert versus["excludes_zero"] is False and versus["lift_interval"][0] < 0.0 < versus["lift_interval"][1]


def test_outcome_control_and_the_live_prefix(settings: Settings) -> None:
    # Results written by a job under another prefix are read once that prefix is promoted.
    other = f"{settings.redis_prefix}-v2"
    payload = plant(settings, other, "home-recs", ctr_b=0.13, seed=32)
    missing = report(settings, definition("home-recs"), "home-recs")
    assert missing.exit_code == 1
    assert f"no results for 'home-recs' yet: {settings.redis_prefix}:experiment:home-recs does not exist" \
        in missing.stderr
    client = redis_lib.Redis.from_url(settings.redis_url)
    try:
        promote(client, RedisKeys(settings.redis_prefix), other, force=True)
    finally:
        client.close()
    result = report(settings, definition("home-recs"), "home-recs", "--outcome", "purchased", "--control", "B",
                    "--json")
    assert result.exit_code == 0, result.output
    data = orjson.loads(result.stdout)
    assert (data["prefix"], data["key"]) == (other, f"{other}:experiment:home-recs")
    assert (data["outcome"], data["control"]) == ("purchased", "B")
    a = data["variants"][0]
    assert a["vs_control"]["outcome"] == "purchased" and a["vs_control"]["verdict"].startswith("A vs B: ")
    conversion = a["rates"]["purchased"]
    assert conversion["successes"] == payload["variants"]["A"]["purchased"]
    assert conversion["interval"][0] < conversion["rate"] < conversion["interval"][1]


def test_exporter_gauges_are_the_stored_counts(kafka_bootstrap: str, redis_url: str) -> None:
    from tests.conftest import isolated_settings

    settings = isolated_settings(kafka_bootstrap, redis_url, experiments=json.dumps(definition("home-recs")))
    payload = plant(settings, settings.redis_prefix, "home-recs", ctr_b=0.13, seed=33)
    collector = ExperimentCollector(settings)
    try:
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples}
    finally:
        collector.close()
    for variant, counts in payload["variants"].items():
        labels = (("experiment", "home-recs"), ("variant", variant))
        assert samples[("pulse_experiment_exposures", labels)] == counts["exposures"]
        for outcome in ("clicked", "carted", "purchased"):
            key = ("pulse_experiment_outcomes", tuple(sorted((*labels, ("outcome", outcome)))))
            assert samples[key] == counts[outcome]
    # The decisions split (bandit-v1) has no results: no samples, and no error.
    assert {dict(labels)["experiment"] for _, labels in samples} == {"home-recs"}


def test_unreachable_redis_is_one_line_and_exit_2(settings: Settings) -> None:
    from infra.local.process import free_port

    redis_url = f"redis://127.0.0.1:{free_port()}/0"  # free a moment ago: nothing listens there
    env = {"PULSE_REDIS_URL": redis_url, "PULSE_EXPERIMENTS": json.dumps(definition("home-recs"))}
    result = CliRunner().invoke(app, ["experiments", "report", "home-recs"], env=env)
    assert result.exit_code == 2 and "Traceback" not in result.output
    (line,) = result.stderr.strip().splitlines()
    assert f"cannot reach Redis at {redis_url}" in line and "PULSE_REDIS_URL" in line, line
