from __future__ import annotations

import collections
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from river import optim, reco

from online_models import mf
from online_models.mf import GlobalParams, ItemParams, MFConfig, OwnerSplitMF, UserParams
from schemas.events import Event, EventType
from tests.unit.online_models.synthetic_ratings import Rating, read_ratings, synthetic_ratings

#: MovieLens 100K as infra/setup.sh leaves it (PULSE_RATINGS_FILE points elsewhere).
ML_100K = Path(__file__).resolve().parents[3] / ".local" / "data" / "ml-100k" / "u.data"

HYPER: dict[str, Any] = dict(
    n_factors=16, bias_lr=0.02, latent_lr=0.03, l2_bias=0.01, l2_latent=0.02,
    init_mu=0.01, init_sigma=0.1, clip_gradient=4.0, seed=42,
)  # fmt: skip


class KeyedDefaultDict(collections.defaultdict[str, Any]):
    """A defaultdict whose factory gets the missing key (River's factories take no argument)."""

    def __init__(self, factory: Callable[[str], Any]) -> None:
        super().__init__()
        self.factory = factory

    def __missing__(self, key: str) -> Any:
        value = self[key] = self.factory(key)
        return value


def river_twin(cfg: MFConfig) -> reco.BiasedMF:
    """River's BiasedMF with the same hyperparameters and our per-key initial vectors."""
    model = reco.BiasedMF(
        n_factors=cfg.n_factors,
        bias_optimizer=optim.SGD(cfg.bias_lr),
        latent_optimizer=optim.SGD(cfg.latent_lr),
        l2_bias=cfg.l2_bias,
        l2_latent=cfg.l2_latent,
        clip_gradient=cfg.clip_gradient,
        seed=cfg.seed,
    )
    model.u_latents = KeyedDefaultDict(lambda u: mf.initial_user(cfg, u).factors)
    model.i_latents = KeyedDefaultDict(lambda i: mf.initial_item(cfg, i).factors)
    return model


def _ratings(source: str) -> list[Rating]:
    if source == "synthetic":
        return synthetic_ratings(20_000, seed=5)
    path = Path(os.environ.get("PULSE_RATINGS_FILE") or ML_100K)
    if not path.is_file():
        message = f"no MovieLens ratings file at {path} (infra/setup.sh fetches ML-100K; or set PULSE_RATINGS_FILE)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return read_ratings(path, limit=20_000)


@pytest.mark.parametrize("source", ["synthetic", "movielens"])
def test_sequential_equivalence_with_river_biased_mf(source: str) -> None:
    ratings = _ratings(source)
    ours = OwnerSplitMF(**HYPER)
    river = river_twin(ours.config)
    max_diff = 0.0
    for user, item, y, _ in ratings:
        before = abs(ours.predict_one(user, item) - river.predict_one(user, item))
        ours.learn_one(user, item, y)
        river.learn_one(user, item, y)
        after = abs(ours.predict_one(user, item) - river.predict_one(user, item))
        max_diff = max(max_diff, before, after)
    print(f"\n{source}: {len(ratings)} events, max |ours - river| = {max_diff:.3e}")
    assert len(ratings) == 20_000 or source != "synthetic"
    assert max_diff <= 1e-9
    assert ours.global_params.n_learned == len(ratings)
    assert ours.global_params.mean == pytest.approx(river.global_mean.get(), abs=1e-12)


def test_learn_step_returns_parts_per_owner_and_leaves_inputs_alone() -> None:
    cfg = MFConfig(n_factors=3, bias_lr=0.1, latent_lr=0.1, seed=1)
    user, item = mf.initial_user(cfg, "u"), mf.initial_item(cfg, "i")
    user_before, item_before = user.factors.copy(), item.factors.copy()
    new_user, new_item, glob = mf.learn_step(user, item, GlobalParams(3.0, 9), 5.0, cfg)
    assert isinstance(new_user, UserParams) and isinstance(new_item, ItemParams)
    assert (user.factors == user_before).all() and (item.factors == item_before).all()
    assert glob == GlobalParams(3.2, 10)
    assert new_user.bias > 0 and new_item.bias > 0


def test_initial_factors_are_stable_per_key_and_seed() -> None:
    a = mf.initial_factors(1, "user", "42", 16, 0.0, 0.1)
    assert (a == mf.initial_factors(1, "user", "42", 16, 0.0, 0.1)).all()
    assert not (a == mf.initial_factors(2, "user", "42", 16, 0.0, 0.1)).any()
    assert not (a == mf.initial_factors(1, "item", "42", 16, 0.0, 0.1)).any()
    assert abs(a.mean()) < 0.1 and 0.03 < a.std() < 0.3


def test_owner_state_bytes_sizes_and_round_trip() -> None:
    user = mf.initial_user(MFConfig(n_factors=16), "u1")
    assert len(user.to_bytes()) == 5 + 8 + 2 + 16 * 8
    again = UserParams.from_bytes(user.to_bytes())
    assert again.bias == user.bias and (again.factors == user.factors).all()
    with pytest.raises(ValueError, match="tag"):
        ItemParams.from_bytes(user.to_bytes())
    with pytest.raises(ValueError, match="expected"):
        UserParams.from_bytes(user.to_bytes()[:-8])


def _trained(n: int = 3_000) -> OwnerSplitMF:
    model = OwnerSplitMF(n_factors=8, bias_lr=0.02, latent_lr=0.03, seed=3)
    for user, item, y, _ in synthetic_ratings(n, seed=9):
        model.learn_one(user, item, y)
    return model


def test_scoring_10k_candidates_is_one_vectorised_call(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _trained()
    for k in range(10_000):  # make 10,000 known items
        model.learn_one("u-bulk", f"cand{k}", 3.0)
    items = [f"cand{k}" for k in range(9_990)] + [f"unseen{k}" for k in range(10)]
    expected = np.array([model.predict_one("1", i) for i in items])

    calls: list[tuple[int, ...]] = []
    real_score_items = mf.score_items

    def spy(user: UserParams, biases: Any, factors: Any, glob: GlobalParams) -> Any:
        calls.append(factors.shape)
        return real_score_items(user, biases, factors, glob)

    def per_item_path(*_: Any) -> float:
        raise AssertionError("per-item predict used while scoring")

    monkeypatch.setattr(mf, "score_items", spy)
    monkeypatch.setattr(mf, "predict", per_item_path)
    monkeypatch.setattr(OwnerSplitMF, "predict_one", per_item_path)
    scores = model.score("1", items)
    assert calls == [(10_000, 8)]  # one matrix-vector product over all 10,000 candidates
    assert scores.shape == (10_000,)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)


def test_top_k_matches_full_sort_and_honours_exclusions() -> None:
    model = _trained()
    n = len(model._item_rows)
    keys = list(model._item_rows)
    scores = model.score("7", keys)
    order = sorted(range(n), key=lambda r: (-scores[r], r))
    exclude = [keys[order[0]], keys[order[3]], "never-seen"]
    got = model.top_k("7", 5, exclude=exclude)
    want = [keys[r] for r in order if keys[r] not in exclude][:5]
    assert [item for item, _ in got] == want
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert len(model.top_k("7", n + 10)) == n


def test_learn_event_targets() -> None:
    model = OwnerSplitMF(n_factors=2, seed=0)
    ev = lambda kind, value=None: Event("e", kind, "u", 0, item_id="i", value=value)  # noqa: E731
    assert model.learn_event(ev(EventType.RATING, 4.5))
    assert model.learn_event(ev(EventType.CLICK))
    assert not model.learn_event(ev(EventType.IMPRESSION))
    assert model.global_params == GlobalParams(mean=(4.5 + 2.0) / 2, n_learned=2)
    with pytest.raises(ValueError, match="no value"):
        model.learn_event(ev(EventType.RATING))
    assert not model.learn_event(Event("e", EventType.ERASE, "u", 0))
    assert "u" not in model._users


def test_learner_bytes_round_trip_keeps_predictions() -> None:
    model = _trained(500)
    blob = model.to_bytes()
    again = OwnerSplitMF.from_bytes(blob)
    assert again.to_bytes() == blob
    assert again.predict_one("3", "10") == model.predict_one("3", "10")
    again.learn_one("3", "brand-new", 5.0)
    model.learn_one("3", "brand-new", 5.0)
    assert again.to_bytes() == model.to_bytes()
    assert OwnerSplitMF.from_bytes(OwnerSplitMF().to_bytes()).to_bytes() == OwnerSplitMF().to_bytes()
