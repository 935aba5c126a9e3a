"""LinUCB end to end on the OBD: the job + serving path decides what ``pulse eval bandit --policy linucb`` decides.

The OBD sample's ``random/men`` log (10,000 impressions, their clicks) goes to a real Kafka as the
events the job reads. The job (``--bounded``, real Kafka, Redis and Flink; ``PULSE_BANDIT_POLICY=linucb``,
the global scope, the eval's default features: the four user features and the position) learns
each impression with its context and its reward (its click joined by request id, else 0 when it
expires) and writes the global arm table. The real shim then answers ``/v1/decisions`` for OBD
user contexts; the CLI replays the same file and, with ``--decide``, decides for the same request
ids (seeds) and contexts. Same arms and propensities, decision by decision, and the job's learned
state is the replay's to the byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis as redis_lib
from typer.testing import CliRunner

from config import Settings
from online_models.bandits import LinUCB
from online_models.off_policy import logged_rows
from producers.producer import EventProducer
from producers.sources import ReplayOrder
from producers.sources.obd import USER_FEATURES, read_obd
from producers.sources.ordering import ordered
from producers.topics import ensure_topics
from pulse.cli import app
from pulse.commands.eval_bandit import DEFAULT_LINUCB_FEATURES
from schemas.redis_keys import Envelope, RedisKeys
from serving import create_app
from serving.server import running
from tests.integration.jobs import run_bounded_job

pytestmark = pytest.mark.flink_job

FEATURES = tuple(DEFAULT_LINUCB_FEATURES.split(","))
N_DECISIONS = 300


def _requests(path: Path) -> list[dict[str, object]]:
    """OBD users' contexts at every position; some with candidate arms, two never shown (they tie)."""
    rng = random.Random(18)
    rows = [e for e in read_obd(path) if e.decision is not None]
    out: list[dict[str, object]] = []
    for i in range(N_DECISIONS):
        row = rng.choice(rows)
        context = {name: row.context[name] for name in USER_FEATURES} | {"position": str(1 + i % 3)}
        arms = None if i % 3 else sorted(rng.sample(sorted({r.item_id or "" for r in rows}), 5))
        if i % 10 == 5:
            arms = ["never-shown-1", "never-shown-2"]
        out.append({"user_id": row.user_id, "decision_point": "home", "context": context,
                    **({"arms": arms} if arms else {})})
    return out


def test_the_job_and_serving_decide_as_the_evaluation_does(settings: Settings, redis_url: str, tmp_path: Path,
                                                            shared_data: Path) -> None:
    path = shared_data / "obd" / "random" / "men" / "men.csv"
    settings = settings.model_copy(update={
        "bandit_policy": "linucb", "bandit_scopes": ("global",), "bandit_features": FEATURES, "bandit_alpha": 1.0,
        "serving_bandit_scope": "global", "serving_control_share": 0.0, "serving_log_served": False,
        "checkpoint_dir": tmp_path / "checkpoints"})
    ensure_topics(settings)
    events = list(ordered(read_obd(path), ReplayOrder.TIME))  # as `pulse produce` replays it
    with EventProducer(settings) as producer:
        for _ in producer.send_all(iter(events)):
            pass
    assert producer.report.produced == len(events)

    run_bounded_job(settings, log=tmp_path / "job.log")

    keys = RedisKeys(settings.redis_prefix)
    stored = Envelope.from_fields(redis_lib.Redis.from_url(redis_url).hgetall(keys.bandit("linucb", "global")))
    learned = LinUCB.from_table_payload(stored.payload)
    replayed = LinUCB(features=FEATURES)
    for row in logged_rows(read_obd(path)):
        replayed.update(row.arm, row.reward, row.context)
    assert sum(n for n, _ in stored.payload["arms"].values()) == 10_000
    assert sum(r for _, r in stored.payload["arms"].values()) == 46  # the sample's clicks
    assert sorted(learned.known_arms()) == sorted(replayed.known_arms())
    requests = _requests(path)
    arms = tuple(sorted(learned.known_arms()))
    for request in requests:  # A and b hold integer sums (categorical features): exact in any order
        x = learned.featurize(request["context"])  # type: ignore[arg-type]
        assert np.array_equal(learned.scores(arms, x), replayed.scores(arms, x))

    with running(create_app(settings)) as url, httpx.Client(base_url=url, timeout=30.0) as client:
        answers = []
        for request in requests:
            response = client.post("/v1/decisions", json=request)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    assert {a["policy"] for a in answers} == {"linucb"} and {a["scope"] for a in answers} == {"global"}

    decide = tmp_path / "decide.jsonl"
    # The context serving logged (and decided on): the request's plus what the shim adds; LinUCB reads FEATURES.
    decide.write_text("".join(json.dumps({"request_id": answer["request_id"], "context": request["context"],
                                          **({"arms": request["arms"]} if "arms" in request else {})}) + "\n"
                              for request, answer in zip(requests, answers, strict=True)))
    result = CliRunner().invoke(app, ["eval", "bandit", "--data", f"obd:{path}", "--policy", "linucb", "--json",
                                      "--no-progress", "--decide", str(decide)], env=settings.to_env())
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)["decisions"]
    served = [(a["request_id"], a["arm"], a["propensity"]) for a in answers]
    assert [(d["request_id"], d["arm"], d["propensity"]) for d in evaluated] == served
    ties = [a for request, a in zip(requests, answers, strict=True) if request.get("arms") == ["never-shown-1",
                                                                                               "never-shown-2"]]
    assert {a["propensity"] for a in ties} == {0.5} and {a["arm"] for a in ties} == {"never-shown-1", "never-shown-2"}
    chosen = {a["arm"] for a in answers if a["propensity"] == 1.0}
    print(f"\n{len(answers)} decisions: serving == pulse eval bandit --decide for each; {len(chosen)} distinct arms "
          f"chosen without a tie, {len(ties)} tied pairs split by the seed")
