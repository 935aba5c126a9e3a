"""In-stream quality: the job's running RMSE on MovieLens-format ratings vs `pulse eval mf` on the same file."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from producers.producer import EventProducer
from producers.sources.movielens import read_movielens
from producers.topics import ensure_topics
from schemas import Decision, Event, EventType
from schemas.redis_keys import Envelope, RedisKeys
from tests.conftest import isolated_settings
from tests.integration.jobs import run_job_until
from tests.unit.online_models.synthetic_ratings import synthetic_ratings

pytestmark = pytest.mark.flink_job

N_RATINGS = 20_000
RATE = 500  # ratings per second
PARALLELISMS = (1, 2)
# Not learned from (impressions are not MF targets), but each makes the job write its user's Redis
# key. Eight users: every partition and every user-stage subtask gets one (murmur2 and Flink's key
# groups on these ids), so pacing starts only once the whole job consumes.
PROBES = [Event(f"probe-{n}", EventType.IMPRESSION, f"quality-probe-{n}", 900_000_000_000, item_id="probe-item",
                decision=Decision(f"probe-req-{n}", "probe", "probe-item", 1.0)) for n in range(8)]


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ml") / "u.data"
    path.write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in synthetic_ratings(N_RATINGS, seed=3)))
    return path


def eval_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "pulse", "eval", "mf", "--data", f"movielens:{path}", "--json", "--no-compare",
            "--no-progress"]


def offline_rmse(path: Path) -> float:
    out = subprocess.run(eval_command(path), cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["pulse"]["rmse"])


class OfflineRmse:
    """`pulse eval mf` on the ratings file, started at once in the background and read when needed:
    one evaluation for both parametrizations, computed while the first job runs (CI time)."""

    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen(eval_command(path), cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.value: float | None = None

    def rmse(self) -> float:
        if self.value is None:
            out, err = self.proc.communicate(timeout=600)
            assert self.proc.returncode == 0, f"pulse eval mf exited {self.proc.returncode}:\n{err[-3000:]}"
            self.value = float(json.loads(out)["pulse"]["rmse"])
        return self.value


@pytest.fixture(scope="module")
def offline(ratings_file: Path) -> Iterator[OfflineRmse]:
    evaluation = OfflineRmse(ratings_file)
    yield evaluation
    if evaluation.proc.poll() is None:
        evaluation.proc.kill()
        evaluation.proc.communicate()


def run_paced(settings: Settings, ratings_file: Path, log: Path) -> dict[str, Any]:
    """Run the job (unbounded) while the ratings are produced paced; the model's payload once all are learned."""
    client = redis_lib.Redis.from_url(settings.redis_url)
    model_key = RedisKeys(settings.redis_prefix).model("mf")
    failures: list[BaseException] = []

    def produce_paced() -> None:
        # Paced like a live stream and only once the job consumes, so the partitions advance
        # together: with a backlog one subtask runs ahead, and the other then predicts with item
        # parameters that already hold later ratings (leakage that flatters the RMSE).
        try:
            with EventProducer(settings) as producer:
                for probe in PROBES:
                    producer.send(probe)
                producer.flush()
                deadline = time.monotonic() + 180
                probe_keys = [RedisKeys(settings.redis_prefix).user_record(probe.user_id) for probe in PROBES]
                while client.exists(*probe_keys) < len(probe_keys):
                    assert time.monotonic() < deadline, "the job never consumed the probe event"
                    time.sleep(0.2)
                for _ in producer.send_all(read_movielens(ratings_file), rate=RATE):
                    pass
            assert producer.report.produced == N_RATINGS + len(PROBES)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            failures.append(exc)

    def learned_everything() -> bool:
        assert not failures, failures
        model = Envelope.from_fields_or_none(client.hgetall(model_key))
        return model is not None and model.payload["events_learned"] >= N_RATINGS

    # Unbounded, as in production: the item-parameter loop between subtasks is live.
    producer = threading.Thread(target=produce_paced, daemon=True)
    producer.start()
    try:
        run_job_until(settings, learned_everything, "--parallelism", str(settings.job_parallelism), log=log)
    finally:
        producer.join(timeout=300)
    assert not failures, failures
    return dict(Envelope.from_fields(client.hgetall(model_key)).payload)


@pytest.fixture(scope="module")
def running_models(
    kafka_bootstrap: str, redis_url: str, ratings_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[int, dict[str, Any] | BaseException]:
    """Both parallelisms' runs, at the same time (CI time: their paced streams overlap).

    Each has its own topics, group and Redis prefix; at the paced rate neither job runs behind.
    """
    outcome: dict[int, dict[str, Any] | BaseException] = {}

    def run(parallelism: int) -> None:
        tmp = tmp_path_factory.mktemp(f"quality-p{parallelism}")
        # One partition per subtask, so each subtask reads its ratings in file (= time) order.
        settings = isolated_settings(kafka_bootstrap, redis_url, partitions=parallelism,
                                     job_parallelism=parallelism, checkpoint_dir=tmp / "chk")
        try:
            ensure_topics(settings)
            outcome[parallelism] = run_paced(settings, ratings_file, tmp / "job.log")
        except BaseException as exc:  # noqa: BLE001 - raised by the test of this parallelism
            outcome[parallelism] = exc

    threads = [threading.Thread(target=run, args=(p,), daemon=True) for p in PARALLELISMS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcome


@pytest.mark.parametrize(("parallelism", "tolerance"), [(1, 0.005), (2, 0.01)])
def test_running_rmse_matches_offline_evaluation(
    offline: OfflineRmse, running_models: dict[int, dict[str, Any] | BaseException], parallelism: int,
    tolerance: float,
) -> None:
    model = running_models[parallelism]
    if isinstance(model, BaseException):
        raise model
    offline_rmse = offline.rmse()
    print(f"\nparallelism {parallelism}: job running RMSE {model['rmse']:.5f}, "
          f"pulse eval mf RMSE {offline_rmse:.5f}, diff {model['rmse'] / offline_rmse - 1:+.3%}")
    assert model["events_learned"] == N_RATINGS
    assert abs(model["rmse"] / offline_rmse - 1) <= tolerance
