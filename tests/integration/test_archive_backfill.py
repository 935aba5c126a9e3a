"""A backfill from the archive into a new prefix reaches the live job's model metadata on the same events.

Issue 18 "Archive and backfill": the live job learns the events from the events topic; the archive
of the same topic, replayed by `pulse backfill` into a new prefix, gives the same model (events
learned, running RMSE within 0.5%). One partition and parallelism 1, so both runs see one order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from producers.producer import EventProducer
from producers.topics import ensure_topics
from schemas import Event, EventType
from schemas.redis_keys import Envelope, RedisKeys
from tests.integration.jobs import inherited_env, run_bounded_job
from tests.unit.online_models.synthetic_ratings import synthetic_ratings

pytestmark = pytest.mark.flink_job

N_RATINGS = 6_000
T0_S = 1_767_225_600  # 2026-01-01T00:00Z


def model_of(settings: Settings, prefix: str) -> dict[str, Any]:
    client = redis_lib.Redis.from_url(settings.redis_url)
    return dict(Envelope.from_fields(client.hgetall(RedisKeys(prefix).model("mf"))).payload)


def test_backfill_into_a_new_prefix_matches_the_live_job(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"partitions": 1, "job_parallelism": 1, "checkpoint_dir": tmp_path / "chk",
                                           "archive_group_id": f"a-{settings.job_name}"})
    ensure_topics(settings)
    ratings = synthetic_ratings(N_RATINGS, seed=4)
    first = ratings[0][3]
    with EventProducer(settings) as producer:
        for n, (user, item, stars, seconds) in enumerate(ratings):
            # The ratings' 200 days squeezed into about 4 hours (order and ties kept): a few hour folders.
            producer.send(Event(f"r-{n}", EventType.RATING, user, (T0_S + (seconds - first) // 4_320) * 1000,
                                item_id=item, value=stars))
    assert producer.report.produced == N_RATINGS and producer.report.ok
    root = tmp_path / "archive"
    archived = subprocess.run([sys.executable, "-m", "pulse", "archive", "run", "--until-end", "--dir", str(root)],
                              cwd=REPO_ROOT, env={**inherited_env(), **settings.to_env()}, capture_output=True,
                              text=True, timeout=300, check=False)
    assert archived.returncode == 0, archived.stderr[-3000:]
    assert f"archived {N_RATINGS} events" in archived.stdout

    run_bounded_job(settings, log=tmp_path / "live.log", timeout_s=300)
    new_prefix = f"{settings.redis_prefix}-v2"
    backfill = subprocess.run(
        [sys.executable, "-m", "pulse", "backfill", "--from-archive", str(root), "--prefix", new_prefix],
        cwd=REPO_ROOT, env={**inherited_env(), **settings.to_env()}, capture_output=True, text=True, timeout=300,
        check=False)
    assert backfill.returncode == 0, backfill.stderr[-3000:]

    live, backfilled = model_of(settings, settings.redis_prefix), model_of(settings, new_prefix)
    print(f"\nlive job: {live['events_learned']} events, RMSE {live['rmse']:.5f}; backfill into {new_prefix}: "
          f"{backfilled['events_learned']} events, RMSE {backfilled['rmse']:.5f}, "
          f"diff {backfilled['rmse'] / live['rmse'] - 1:+.3%}\n{backfill.stdout.strip()}")
    assert backfilled["events_learned"] == live["events_learned"] == N_RATINGS
    assert abs(backfilled["rmse"] / live["rmse"] - 1) <= 0.005
    assert f"backfilled {N_RATINGS} events into {new_prefix!r}" in backfill.stdout
