"""In-stream quality: the job's running RMSE on MovieLens-format ratings vs `pulse eval mf` on the same file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from producers.producer import EventProducer
from producers.sources.movielens import read_movielens
from producers.topics import ensure_topics
from schemas import Decision, Event, EventType
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import run_job_until
from tests.unit.online_models.synthetic_ratings import synthetic_ratings

N_RATINGS = 20_000
RATE = 500  # ratings per second
# Not learned from (impressions are not MF targets), but it makes the job write a Redis key.
PROBE = Event("probe-0", EventType.IMPRESSION, "quality-probe", 900_000_000_000, item_id="probe-item",
              decision=Decision("probe-req", "probe", "probe-item", 1.0))


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ml") / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in synthetic_ratings(N_RATINGS, seed=3)))
    return path


def offline_rmse(path: Path) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "pulse", "eval", "mf", "--data", f"movielens:{path}", "--json", "--no-compare",
         "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True,
    )
    return float(json.loads(out.stdout)["pulse"]["rmse"])


@pytest.mark.parametrize(("parallelism", "tolerance"), [(1, 0.005), (2, 0.01)])
def test_running_rmse_matches_offline_evaluation(
    settings: Settings, tmp_path: Path, ratings_file: Path, parallelism: int, tolerance: float
) -> None:
    # One partition per subtask, so each subtask reads its ratings in file (= time) order.
    settings = settings.model_copy(update={
        "partitions": parallelism, "job_parallelism": parallelism, "checkpoint_dir": tmp_path / "chk",
    })
    ensure_topics(settings)

    def produce_paced() -> None:
        # Paced like a live stream and only once the job consumes, so the partitions advance
        # together: with a backlog one subtask runs ahead, and the other then predicts with item
        # parameters that already hold later ratings (leakage that flatters the RMSE).
        with EventProducer(settings) as producer:
            producer.send(PROBE)
            producer.flush()
            deadline = time.monotonic() + 180
            while not client.exists(RedisKeys(settings.redis_prefix).user_record(PROBE.user_id)):
                assert time.monotonic() < deadline, "the job never consumed the probe event"
                time.sleep(0.2)
            for _ in producer.send_all(read_movielens(ratings_file), rate=RATE):
                pass
        assert producer.report.produced == N_RATINGS + 1  # and the probe

    client = redis_lib.Redis.from_url(settings.redis_url)
    model_key = RedisKeys(settings.redis_prefix).model("mf")

    def learned_everything() -> bool:
        model = Envelope.from_fields_or_none(client.hgetall(model_key))
        return model is not None and model.payload["events_learned"] >= N_RATINGS

    # Unbounded, as in production: the item-parameter loop between subtasks is live.
    producer = threading.Thread(target=produce_paced)
    producer.start()
    try:
        run_job_until(settings, learned_everything, "--parallelism", str(parallelism), log=tmp_path / "job.log")
    finally:
        producer.join()
    model = Envelope.from_fields(client.hgetall(model_key)).payload
    offline = offline_rmse(ratings_file)
    print(f"\nparallelism {parallelism}: job running RMSE {model['rmse']:.5f}, "
          f"pulse eval mf RMSE {offline:.5f}, diff {model['rmse'] / offline - 1:+.3%}")
    assert model["events_learned"] == N_RATINGS
    assert abs(model["rmse"] / offline - 1) <= tolerance
