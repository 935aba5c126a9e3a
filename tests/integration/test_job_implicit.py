"""The job with the implicit learner (`PULSE_MF_LEARNER=bpr`): its running HitRate@10 in the model key is
`pulse eval mf --metric ranking`'s on the same file (issue 17: within 1 % at parallelism 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from online_models.implicit_params import implicit_config
from online_models.planted import PlantedConfig, planted_stream
from producers.sources.jsonl import write_jsonl
from producers.topics import ensure_topics
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import inherited_env, run_bounded_job

pytestmark = pytest.mark.flink_job

N_CLICKS = 4_000  # with their carts and impressions: 16,518 events


def test_running_hit_rate_equals_pulse_eval_at_parallelism_1(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"partitions": 1, "job_parallelism": 1, "mf_learner": "bpr",
                                           "checkpoint_dir": tmp_path / "chk"})  # fmt: skip
    ensure_topics(settings)
    events = planted_stream(PlantedConfig(n_clicks=N_CLICKS, seed=11))
    data = tmp_path / "planted.jsonl"
    write_jsonl(data, events)
    env = {**inherited_env(), **settings.to_env()}
    produced = subprocess.run([sys.executable, "-m", "pulse", "produce", f"jsonl:{data}"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
    assert produced.returncode == 0, produced.stderr[-2000:]
    assert f"produced {len(events)}, failed 0" in produced.stdout

    # The evaluation runs while the job does (CI time); the same settings, so the same learner.
    evaluation = subprocess.Popen(
        [sys.executable, "-m", "pulse", "eval", "mf", "--metric", "ranking", "--data", f"jsonl:{data}", "--k", "10",
         "--json", "--no-progress"], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        run_bounded_job(settings, log=tmp_path / "job.log", timeout_s=300)
        out, err = evaluation.communicate(timeout=300)
    finally:
        if evaluation.poll() is None:
            evaluation.kill()
    assert evaluation.returncode == 0, err[-2000:]
    offline = json.loads(out)[f"jsonl:{data}"]["implicit BPR"]

    client = redis_lib.Redis.from_url(settings.redis_url)
    model = Envelope.from_fields(client.hgetall(RedisKeys(settings.redis_prefix).model("mf"))).payload
    print(f"\nplanted, {len(events):,} events, p=1, bpr: job running HitRate@10 {model['hit_rate']:.4f} "
          f"({model['judged']:,} judged), pulse eval {offline['hit_rate']:.4f} ({offline['n']:,} judged), "
          f"diff {model['hit_rate'] / offline['hit_rate'] - 1:+.3%}")
    assert model["learner"] == "bpr" and model["ranking_k"] == 10 and model["rmse"] is None
    weights = implicit_config(settings).weights
    assert model["events_learned"] == sum(1 for e in events if weights.positive(e) > 0)  # clicks and carts
    assert model["judged"] == offline["n"]
    assert abs(model["hit_rate"] / offline["hit_rate"] - 1) <= 0.01
    assert offline["hit_rate"] > 0.05  # a learner that learned something, not two zeros agreeing
