"""The implicit learner: per-owner steps, negatives, settings, and the in-memory learner."""

from __future__ import annotations

import numpy as np
import pytest

from config import Settings
from online_models.implicit import ImplicitMF
from online_models.implicit_params import (
    EventWeights,
    ImplicitConfig,
    bpr_step,
    implicit_config,
    negative_rows,
    score,
    wmf_step,
)
from online_models.mf_params import ItemParams, UserParams
from schemas.events import Event, EventType


def params(*values: float) -> tuple[UserParams, ItemParams, ItemParams]:
    u, i, j = np.array(values[:2]), np.array(values[2:4]), np.array(values[4:6])
    return UserParams(0.0, u), ItemParams(0.0, i), ItemParams(0.0, j)


def test_bpr_step_separates_positive_from_negative_and_leaves_inputs() -> None:
    user, pos, neg = params(0.2, -0.1, 0.3, 0.1, -0.2, 0.4)
    before = (user.factors.copy(), pos.factors.copy(), neg.factors.copy())
    cfg = ImplicitConfig(n_factors=2, lr=0.1, bias_lr=0.1, l2=0.0)
    u2, p2, (n2,) = bpr_step(user, pos, [neg], 1.0, cfg)
    assert score(u2, p2) - score(u2, n2) > score(user, pos) - score(user, neg)
    assert p2.bias > 0 > n2.bias
    assert all((a == b).all() for a, b in zip(before, (user.factors, pos.factors, neg.factors), strict=True))


def test_bpr_gradient_matches_a_finite_difference() -> None:
    user, pos, neg = params(0.2, -0.1, 0.3, 0.1, -0.2, 0.4)
    cfg = ImplicitConfig(n_factors=2, lr=1e-6, bias_lr=0.0, l2=0.0)
    u2, _, _ = bpr_step(user, pos, [neg], 1.0, cfg)

    def objective(u: np.ndarray) -> float:
        return float(np.log(1 / (1 + np.exp(-(u @ pos.factors - u @ neg.factors)))))

    eps = 1e-6
    numeric = [(objective(user.factors + eps * e) - objective(user.factors - eps * e)) / (2 * eps) for e in np.eye(2)]
    assert (u2.factors - user.factors) / 1e-6 == pytest.approx(numeric, rel=1e-4)


def test_wmf_step_moves_the_score_towards_the_target_by_its_weight() -> None:
    user, item, _ = params(0.5, 0.5, 0.5, 0.5, 0, 0)
    cfg = ImplicitConfig(loss="wmf", n_factors=2, lr=0.1, bias_lr=0.1, l2=0.0)
    _, up = wmf_step(user, item, 1.0, 1.0, cfg)
    _, down = wmf_step(user, item, 0.0, 1.0, cfg)
    _, light = wmf_step(user, item, 0.0, 0.1, cfg)
    assert score(user, up) > score(user, item) > score(user, light) > score(user, down)


def test_negatives_are_uniform_deterministic_and_skip_the_positive() -> None:
    rows = [r for key in range(2_000) for r in negative_rows(3, key, 10, 4, skip=7)]
    counts = np.bincount(rows, minlength=10)
    others = np.delete(counts, 7)
    assert counts[7] == 0 and others.min() > 0.85 * others.max()
    assert negative_rows(3, 5, 10, 4) == negative_rows(3, 5, 10, 4) != negative_rows(3, 6, 10, 4)


def test_event_weights_and_settings() -> None:
    w = EventWeights(view=0.5)
    assert w.positive(Event("e", EventType.VIEW, "u", 0, item_id="i")) == 0.5
    assert w.positive(Event("e", EventType.IMPRESSION, "u", 0, item_id="i")) == 0.0
    assert w.positive(Event("e", EventType.RATING, "u", 0, item_id="i", value=5.0)) == 1.0
    cfg = implicit_config(Settings(mf_learner="wmf", weight_purchase=7.0, implicit_factors=5, mf_seed=9))
    assert (cfg.loss, cfg.weights.purchase, cfg.n_factors, cfg.seed) == ("wmf", 7.0, 5, 9)
    assert implicit_config(Settings()).loss == "bpr"  # the explicit learner is the default; bpr when asked
    with pytest.raises(ValueError, match="loss must be one of"):
        ImplicitConfig(loss="hinge")


def test_wmf_learns_impressions_as_negatives_and_bpr_ignores_them() -> None:
    imp = Event("i", EventType.IMPRESSION, "u", 0, item_id="x")
    wmf, bpr = ImplicitMF(loss="wmf"), ImplicitMF(loss="bpr")
    assert wmf.learn_event(imp) and not bpr.learn_event(imp)
    assert list(bpr.item_keys) == ["x"]  # known, so it can be ranked and drawn as a negative
    assert wmf.item_params("x").bias < 0 == bpr.item_params("x").bias


def test_wmf_state_round_trips_and_erase_forgets_the_user() -> None:
    mf = ImplicitMF(loss="wmf", n_factors=3, seed=2)
    for n in range(20):
        mf.learn_event(Event(f"e{n}", EventType.CLICK if n % 3 else EventType.IMPRESSION, f"u{n % 2}", n,
                             item_id=f"i{n % 5}"))  # fmt: skip
    restored = ImplicitMF.from_bytes(mf.to_bytes())
    assert restored.to_bytes() == mf.to_bytes() and restored.config == mf.config
    assert restored.top_k("u1", 3) == mf.top_k("u1", 3)
    learned = mf.user_params("u1").factors.copy()
    mf.learn_event(Event("x", EventType.ERASE, "u1", 99))
    assert not np.allclose(mf.user_params("u1").factors, learned)
