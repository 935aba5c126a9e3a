"""A shuffled MovieLens-format file replayed by `pulse produce` reaches the job in event-time order.

Issue 22.1: replayed in file order, the job's running RMSE differed from `pulse eval mf` (which
sorts by time) and most events counted as late. Now both see the same (time) order, so a bounded
run at parallelism 1 gives `pulse eval mf`'s RMSE and (almost) no late events.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from producers.topics import ensure_topics
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import inherited_env, run_bounded_job
from tests.integration.test_job_quality import offline_rmse
from tests.unit.online_models.synthetic_ratings import synthetic_ratings

pytestmark = pytest.mark.flink_job

N_RATINGS = 8_000


def shuffled_udata(path: Path, n: int, seed: int) -> Path:
    rows = synthetic_ratings(n, seed=seed)
    random.Random(seed).shuffle(rows)
    path.write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in rows))
    return path


def test_shuffled_movielens_replay_matches_eval_and_is_not_late(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"partitions": 1, "job_parallelism": 1, "checkpoint_dir": tmp_path / "chk"})
    ensure_topics(settings)
    data = shuffled_udata(tmp_path / "u.data", N_RATINGS, seed=5)
    lines = data.read_text().splitlines()
    times = [int(line.split("\t")[3]) for line in lines]
    assert sum(a > b for a, b in itertools.pairwise(times)) > N_RATINGS // 3  # really shuffled

    produced = subprocess.run(
        [sys.executable, "-m", "pulse", "produce", f"movielens:{data}"],  # default --order time
        cwd=REPO_ROOT, env={**inherited_env(), **settings.to_env()}, capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert produced.returncode == 0, produced.stderr[-2000:]
    assert f"produced {N_RATINGS}, failed 0" in produced.stdout

    run_bounded_job(settings, log=tmp_path / "job.log", timeout_s=240)

    client = redis_lib.Redis.from_url(settings.redis_url)
    model = Envelope.from_fields(client.hgetall(RedisKeys(settings.redis_prefix).model("mf"))).payload
    offline = offline_rmse(data)
    print(f"\nshuffled u.data, {N_RATINGS:,} ratings, p=1: job running RMSE {model['rmse']:.5f}, "
          f"pulse eval mf RMSE {offline:.5f}, diff {model['rmse'] / offline - 1:+.3%}, "
          f"late events {model['late_events']}")
    assert model["events_learned"] == N_RATINGS
    assert abs(model["rmse"] / offline - 1) <= 0.005
    assert model["late_events"] <= N_RATINGS // 1000
