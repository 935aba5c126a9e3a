"""The drift watch: a planted change of tastes or of the event mix is flagged soon; a stationary stream never."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from online_models.drift import DriftWatch
from online_models.mf import OwnerSplitMF
from online_models.planted import PlantedConfig, planted_stream
from schemas.events import Event

Rating = tuple[str, str, float]


def ratings(n: int, seed: int, swap_at: int | None = None, n_users: int = 200, n_items: int = 300) -> list[Rating]:
    """Low-rank tastes + noise; from ``swap_at`` on, every user rates with another user's tastes."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(0, 0.7, (n_users, 4)), rng.normal(0, 0.7, (n_items, 4))
    users, items = rng.integers(0, n_users, n), rng.integers(0, n_items, n)
    taste = users.copy()
    if swap_at is not None:
        taste[swap_at:] = rng.permutation(n_users)[users[swap_at:]]
    y = 3 + np.einsum("ij,ij->i", p[taste], q[items]) + rng.normal(0, 0.3, n)
    return [(f"u{u}", f"i{i}", float(v)) for u, i, v in zip(users.tolist(), items.tolist(), y.tolist(), strict=True)]


def mf_error_alarms(stream: list[Rating]) -> list[int]:
    """Indexes at which the watch alarms on the prequential squared error of Pulse's MF."""
    mf, watch, alarms = OwnerSplitMF(n_factors=4, bias_lr=0.05, latent_lr=0.05, seed=1), DriftWatch(), []
    for n, (user, item, y) in enumerate(stream):
        error = (mf.predict_one(user, item) - y) ** 2
        mf.learn_one(user, item, y)
        if watch.observe_error(error, n):
            alarms.append(n)
    return alarms


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_swapped_tastes_are_flagged_within_2000_events(seed: int) -> None:
    # MF warms up on the first 10,000 ratings (its error can bump while its factors grow: the
    # watch may say so then); from there until the swap, no alarm; after it, one within 2,000.
    swap = 30_000
    alarms = [n for n in mf_error_alarms(ratings(34_000, seed=seed, swap_at=swap)) if n >= 10_000]
    assert alarms and swap <= alarms[0] <= swap + 2_000, alarms


def test_stationary_200k_stream_raises_no_alarm() -> None:
    # Precomputed errors: a learner at its steady state on stationary data leaves i.i.d. errors
    # around its noise (squared normal errors here, the size MF's are at the end of the warm-up
    # above); and the event mix of the planted stream (sessions, impressions, carts: clustered
    # 0/1 signals), 200,000 events each.
    rng = np.random.default_rng(4)
    errors = (rng.normal(0, 0.55, 200_000) ** 2).tolist()
    watch = DriftWatch()
    assert not [n for n, e in enumerate(errors) if watch.observe_error(e, n)]
    events = planted_stream(PlantedConfig(n_clicks=50_000, seed=5))[:200_000]
    assert len(events) == 200_000
    assert not [a for e in events for a in watch.observe_event(e)]
    assert watch.last_drift_ms is None and watch.alarms == {}


def test_a_change_of_event_mix_is_flagged_within_2000_events() -> None:
    before = planted_stream(PlantedConfig(n_users=300, n_items=300, n_clicks=5_000, cart_rate=0.1, seed=6))
    after = planted_stream(PlantedConfig(n_users=300, n_items=300, n_clicks=2_000, cart_rate=0.6, seed=7))
    shift = before[-1].event_time_ms + 1 - after[0].event_time_ms
    stream: list[Event] = before + [dataclasses.replace(e, event_time_ms=e.event_time_ms + shift) for e in after]
    watch = DriftWatch()
    alarms = [(n, a) for n, e in enumerate(stream) for a in watch.observe_event(e)]
    first = [n for n, a in alarms if a.signal == "mix:add_to_cart"]
    assert first and len(before) <= first[0] <= len(before) + 2_000, alarms
    assert all(n >= len(before) for n, _ in alarms)
    assert watch.last_drift_ms is not None and watch.last_drift_ms >= stream[len(before)].event_time_ms
