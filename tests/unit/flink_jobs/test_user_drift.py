"""Drift in the user stage: the steps watch their own prequential errors and event mix, alarm, and react."""

from __future__ import annotations

import pytest

from flink_jobs.messages import ModelProgress
from flink_jobs.shared_steps import Coalesced, ModelTotals
from flink_jobs.user_steps import DriftReaction, UserRecord, UserStageConfig, UserSteps
from online_models.bandits import BanditScope
from online_models.drift import DriftAlarm
from online_models.mf import MFConfig
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys
from tests.unit.online_models.test_drift import Rating, ratings


def steps(reaction: str = "alert", **drift: float) -> UserSteps:
    return UserSteps(UserStageConfig(
        mf=MFConfig(n_factors=4, bias_lr=0.05, latent_lr=0.05, seed=1), keys=RedisKeys("t"),
        scopes=(BanditScope.GLOBAL,), session_gap_ms=30 * 60_000, impression_ttl_ms=600_000, top_k=5,
        score_refresh_ms=200, redis_shards=1, drift=DriftReaction(reaction, **drift),  # type: ignore[arg-type]
    ), subtask=0)


def run(user_steps: UserSteps, stream: list[Rating]) -> list[tuple[int, DriftAlarm]]:
    """Each rating through ``on_event`` as the stage would; the alarms out, with the event's index."""
    records: dict[str, UserRecord | None] = {}
    alarms = []
    for n, (user, item, value) in enumerate(stream):
        event = Event(f"e{n}", EventType.RATING, user, 1_000 * n, item_id=item, value=value)
        records[user], outputs = user_steps.on_event(records.get(user), event, {})  # type: ignore[arg-type]
        alarms += [(n, out) for out in outputs if isinstance(out, DriftAlarm)]
    return alarms


def test_the_steps_flag_swapped_tastes_within_2000_events() -> None:
    swap = 30_000
    alarms = [(n, a) for n, a in run(steps(), ratings(34_000, seed=0, swap_at=swap)) if a.signal == "error"]
    late = [n for n, _ in alarms if n >= 10_000]  # the warm-up may bump (test_drift.py says why)
    assert late and swap <= late[0] <= swap + 2_000, late
    assert all(alarm.time_ms == 1_000 * n for n, alarm in alarms)  # the event time of the alarming event


def test_boost_raises_the_learning_rates_for_a_while_after_an_error_alarm() -> None:
    user_steps = steps("boost", boost_factor=4.0, boost_events=500)
    assert user_steps.boosted.latent_lr == pytest.approx(0.2) and user_steps.boosted.bias_lr == pytest.approx(0.2)
    stream = ratings(34_000, seed=0, swap_at=30_000)
    alarms = [n for n, a in run(user_steps, stream) if a.signal == "error"]
    assert alarms
    # Every rating is learned: right after the last alarm the boost counts down from 500.
    assert user_steps.boost_left == max(0, 500 - (len(stream) - 1 - alarms[-1]))


def test_off_means_no_detectors() -> None:
    user_steps = steps("off")
    assert user_steps.drift is None
    assert run(user_steps, ratings(34_000, seed=0, swap_at=30_000)) == []


def test_the_model_key_shows_the_alarms_and_the_last_drift_time() -> None:
    totals = ModelTotals("mf-v1", 4, RedisKeys("t"))
    value = totals.apply(None, ModelProgress(10, 2.5, 1.5, 0, 0, 0, 100))
    value = totals.apply(value, DriftAlarm("error", 31_000, 5_000, 0.3, 0.9))
    value = totals.apply(value, DriftAlarm("mix:click", 31_200, 4_000, 0.1, 0.3))
    value = totals.apply(value, DriftAlarm("error", 32_000, 7_000, 0.3, 0.9))
    assert value["learned"] == 10 and value["drift_alarms"] == {"error": 2, "mix:click": 1}
    assert value["last_drift_ms"] == 7_000 and value["last_drift"] == "error"
    (write,) = totals.writes("mf", Coalesced(value, 7_000), final=False)
    assert write.payload["drift_alarms"] == {"error": 2, "mix:click": 1} and write.payload["last_drift_ms"] == 7_000
