"""OPE on Pulse's own logs: decisions served by the real shim, planted clicks, ``pulse eval bandit --data kafka:``.

2,000 ``/v1/decisions`` answers (Thompson sampling from an arm table in a real Redis, a quarter of
the users in the uniform control) are logged by the shim as impressions on a real Kafka topic;
each is clicked with its arm's planted probability (seeded), the clicks sent back through
``/v1/events:batch`` with the decision's request id, plus clicks naming no decision and a repeated
click. Then the CLI, run as a user runs it, reads the topic and estimates:

- the logging policy itself: IPW, SNIPS and DR equal the observed CTR within their intervals;
- uniform (``egreedy --epsilon 1``), a second policy: its IPW / DR land near its planted value
  (mean of the click probabilities), which holds only if the logged propensities are right.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from config import REPO_ROOT, Settings
from flink_jobs.redis_writer import RedisWriter
from producers.topics import ensure_topics
from pulse.cli import app
from schemas.redis_keys import RedisKeys
from serving import create_app
from serving.server import running

N_DECISIONS = 2_000
CLICK_PROBABILITY = {"a": 0.30, "b": 0.20, "c": 0.10}
#: Thompson sampling's arm table (successes, failures): shown about 54 / 31 / 15 % of the time.
TS_TABLE = {"a": [6.0, 14.0], "b": [5.0, 15.0], "c": [4.0, 16.0]}
UNKNOWN_CLICKS = 3
T0 = 1_700_000_000_000


def _serve(settings: Settings) -> tuple[list[dict[str, Any]], set[str]]:
    """Serve the decisions and send the planted clicks; returns the decisions and the request ids clicked."""
    # One draw per decision: seed 184's 2,000 draws fall below 0.1 / 0.2 / 0.3 within 0.2 points of those shares
    # (seed 18's: 1.6 points short of 0.2, so every estimate came out about a standard error low).
    rng = random.Random(184)
    decisions, clicks = [], []
    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30.0) as client:
        for i in range(N_DECISIONS):
            response = client.post("/v1/decisions", json={"user_id": f"u{i}", "decision_point": "home"})
            assert response.status_code == 200, response.text
            decision = response.json()
            decisions.append(decision)
            if rng.random() < CLICK_PROBABILITY[decision["arm"]]:
                clicks.append({"type": "click", "user_id": f"u{i}", "item_id": decision["arm"],
                               "request_id": decision["request_id"]})
        clicked = {click["request_id"] for click in clicks}
        clicks += [{"type": "click", "user_id": "u0", "item_id": "a", "request_id": f"{n:032x}"}
                   for n in range(UNKNOWN_CLICKS)]
        clicks.append(dict(clicks[0]))  # the same decision clicked twice: one reward
        for start in range(0, len(clicks), 500):
            result = client.post("/v1/events:batch", json={"events": clicks[start:start + 500]}).json()
            assert result["accepted"] == len(clicks[start:start + 500]), result
    return decisions, clicked  # the shim has stopped: every queued impression was flushed to Kafka


def _evaluate(settings: Settings, tmp_path: Path, user: list[str], second: list[str]) -> list[dict[str, Any]]:
    """``pulse eval bandit --data kafka:TOPIC --json`` of ``user``'s policy and of ``second``'s, at once.

    The first runs as a process, as a user runs it; the second meanwhile in this process (the same
    command, without a second interpreter's start-up).
    """
    args = ["eval", "bandit", "--data", f"kafka:{settings.topic_events}", "--json", "--no-progress"]
    env = {"PULSE_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "PULSE_HOME": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "pulse", *args, *user], cwd=REPO_ROOT, env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    in_process = CliRunner().invoke(app, [*args, *second], env=env)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert in_process.exit_code == 0, in_process.output
    return [json.loads(stdout), json.loads(in_process.stdout)]


def _line(name: str, out: dict[str, Any]) -> str:
    parts = [f"{k.upper()} {out[k]['value']:.4f} [{out[k]['low']:.4f}, {out[k]['high']:.4f}]"
             for k in ("ipw", "snips", "dr")]
    return f"{name:<8} " + "  ".join(parts)


def test_ope_of_served_decisions_from_the_events_topic(settings: Settings, redis_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    ensure_topics(settings, [settings.topic_events])
    keys = RedisKeys(settings.redis_prefix)
    payload = {"policy": "ts", "scope": "global", "stat_names": ["successes", "failures"], "arms": TS_TABLE,
               "hyperparameters": {"prior_alpha": 1.0, "prior_beta": 1.0}}
    with RedisWriter(keys, "mf-v1", url=redis_url) as writer:
        writer.write_batch([(keys.bandit("ts", "global"), T0, payload)])
    app_settings = settings.model_copy(update={"bandit_policy": "ts", "serving_control_share": 0.25,
                                               "serving_log_served": False})
    decisions, clicked = _serve(app_settings)
    planted = len(clicked)
    served_at = time.monotonic()

    logged, uniform = _evaluate(settings, tmp_path, ["--policy", "logged"], ["--policy", "egreedy", "--epsilon", "1"])
    ctr = planted / N_DECISIONS
    assert logged["logged"] == {"clicks": float(planted), "impressions": N_DECISIONS, "ctr": ctr}
    assert set(logged["logged_by"]) == {"ts", "uniform"}
    assert logged["join"] == {"reward_types": ["click"], "rewarded": planted, "reward_events": planted + 1,
                              "unknown_decision": UNKNOWN_CLICKS, "no_request_id": 0, "duplicate_impressions": 0,
                              "undecodable": 0}
    for name in ("ipw", "snips", "dr"):
        assert logged[name]["low"] <= ctr <= logged[name]["high"], (name, logged[name], ctr)
        assert abs(logged[name]["value"] - ctr) < 1e-12
    expected_ctr = sum(CLICK_PROBABILITY[d["arm"]] for d in decisions) / N_DECISIONS
    assert abs(ctr - expected_ctr) < 4 * logged["ipw"]["stderr"]  # the clicks are the planted ones

    value = sum(CLICK_PROBABILITY.values()) / len(CLICK_PROBABILITY)  # 0.2: each arm a third of the time
    assert uniform["arms"] == 3 and uniform["logged"] == logged["logged"]
    # IPW from what the shim answered (propensities) and the clicks sent: the CLI read exactly these
    answered = sum(1 / 3 / d["propensity"] for d in decisions if d["request_id"] in clicked) / N_DECISIONS
    assert abs(uniform["ipw"]["value"] - answered) < 1e-12
    for name in ("ipw", "snips", "dr"):  # 4 standard errors: a false alarm once in ~16,000 runs
        assert abs(uniform[name]["value"] - value) < 4 * uniform[name]["stderr"], (name, uniform[name])
    print(f"\n{N_DECISIONS:,} decisions logged by {logged['logged_by']}, {planted} planted clicks: "
          f"observed CTR {ctr:.4f} (planted expectation {expected_ctr:.4f}); uniform's planted value {value:.4f}")
    print(_line("logged", logged))
    print(_line("uniform", uniform))
    print(f"served + clicked in {served_at - started:.1f} s, two evaluations in {time.monotonic() - served_at:.1f} s")


def test_a_missing_topic_is_one_line(kafka_bootstrap: str, tmp_path: Path) -> None:
    topic = f"no-such-topic-{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(
        app, ["--kafka-bootstrap", kafka_bootstrap, "eval", "bandit", "--data", f"kafka:{topic}", "--policy", "logged"],
        env={"PULSE_HOME": str(tmp_path)},
    )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: cannot read kafka:{topic} at {kafka_bootstrap}: topic {topic!r} does not exist"]
    print(f"\n{lines[0]}")
