"""The implicit learner in the user stage: at parallelism 1 its steps are `pulse eval mf --metric ranking`'s learner."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from flink_jobs.messages import ItemTouch, ItemTouches, ModelProgress
from flink_jobs.shared_steps import Coalesced, ItemOwner, ModelTotals
from flink_jobs.user_steps import DriftReaction, UserRecord, UserStageConfig, UserSteps
from online_models.implicit import ImplicitMF
from online_models.implicit_params import EventWeights, ImplicitConfig, item_shape
from online_models.planted import PlantedConfig, planted_stream
from online_models.rankers import FactorRanker
from online_models.ranking import evaluate_ranking
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys

CONFIGS = {
    "bpr": ImplicitConfig(n_factors=8, n_negatives=4, seed=2),
    "wmf": ImplicitConfig("wmf", n_factors=8, lr=0.2, bias_lr=0.01, l2=0.05, seed=2,
                          weights=EventWeights(impression=0.03)),
}


def steps(cfg: ImplicitConfig, k: int = 10) -> UserSteps:
    return UserSteps(UserStageConfig(
        mf=item_shape(cfg), keys=RedisKeys("t"), scopes=(), session_gap_ms=30 * 60_000, impression_ttl_ms=600_000,
        top_k=5, score_refresh_ms=200, redis_shards=1, drift=DriftReaction("off"),
        implicit=cfg, ranking_k=k,
    ), subtask=0)


def run(user_steps: UserSteps, events: list[Event]) -> tuple[dict[str, UserRecord | None], list[Any]]:
    """Each event through ``on_event`` as the stage would; the records and every output."""
    records: dict[str, UserRecord | None] = {}
    outputs: list[Any] = []
    for event in events:
        records[event.user_id], out = user_steps.on_event(records.get(event.user_id), event, {})  # type: ignore[arg-type]
        outputs += out
    return records, outputs


@pytest.fixture(scope="module")
def planted() -> list[Event]:
    return planted_stream(PlantedConfig(n_users=200, n_items=150, n_clicks=2_500, seed=4))


@pytest.mark.parametrize("loss", sorted(CONFIGS))
def test_running_hit_rate_is_the_evaluations_at_parallelism_1(planted: list[Event], loss: str) -> None:
    cfg = CONFIGS[loss]
    user_steps = steps(cfg)
    records, _ = run(user_steps, planted)
    progress = [p for record in records.values() if record for p in user_steps.report(record)]
    judged, hits = sum(p.judged for p in progress), sum(p.hits for p in progress)
    offline = evaluate_ranking(planted, {"m": FactorRanker(ImplicitMF.from_config(cfg))}, k=10)["m"]
    print(f"\n{loss}: job steps {hits}/{judged} = {hits / judged:.4f}, evaluation {offline.hits}/{offline.n}")
    assert (judged, hits) == (offline.n, offline.hits) and hits > 0
    # The replica is the evaluation's learner, row for row.
    model = ImplicitMF.from_config(cfg)
    for event in planted:
        model.learn_event(event)
    items = user_steps.replica.items
    assert [items.item_at(r) for r in range(len(items))] == list(model.item_keys)
    assert all(np.allclose(items.get(i).factors, model.item_params(i).factors) for i in model.item_keys)


def test_every_item_a_bpr_step_changes_goes_to_its_owner_and_the_owner_ends_equal(planted: list[Event]) -> None:
    cfg = CONFIGS["bpr"]
    user_steps = steps(cfg)
    _, outputs = run(user_steps, planted[:4_000])
    touches = [t for t in outputs if isinstance(t, ItemTouch)]
    learned = [t for t in touches if t.d_factors is not None]
    positives = sum(1 for e in planted[:4_000] if cfg.weights.positive(e) > 0)
    assert len(learned) > positives  # negatives move too (up to n_negatives + 1 items per positive)
    assert sum(1 for t in learned if t.weight > 0) == positives  # the popularity hit rides on its own item only
    owner = ItemOwner(item_shape(cfg), RedisKeys("t"), 3_600_000)
    values: dict[str, Any] = {}
    for merged in ItemTouches.merge(touches):
        values[merged.item_id] = owner.apply(values.get(merged.item_id), merged)
    for item, value in values.items():
        if value["params"] is not None:
            assert np.allclose(value["params"].factors, user_steps.replica.items.get(item).factors, atol=1e-9)


def test_model_key_reports_hit_rate_not_rmse_for_an_implicit_learner() -> None:
    totals = ModelTotals("mf-v1", 8, RedisKeys("t"), learner="bpr", ranking_k=10)
    value = totals.apply(None, ModelProgress(10, 0.0, 0.0, 0, 0, 0, 5, judged=8, hits=2))
    value = totals.apply(value, ModelProgress(4, 0.0, 0.0, 0, 0, 0, 6, judged=2, hits=1))
    (write,) = totals.writes("mf", Coalesced(value, 6, True), final=False)
    assert write.payload["hit_rate"] == pytest.approx(0.3) and write.payload["judged"] == 10
    assert write.payload["rmse"] is None and write.payload["learner"] == "bpr" and write.payload["ranking_k"] == 10


def test_the_judge_session_survives_the_records_state() -> None:
    user_steps = steps(CONFIGS["bpr"])
    record, _ = user_steps.on_event(None, Event("e1", EventType.CLICK, "u", 1, item_id="a"), {})  # type: ignore[arg-type]
    assert record is not None and record.seen is not None
    restored = UserRecord.from_state(record.to_state())
    assert restored.seen == record.seen and [item for _, item in restored.seen.recent] == ["a"]  # type: ignore[union-attr]
    # An impression does not make its item seen (every click follows one).
    restored, _ = user_steps.on_event(restored, Event("e2", EventType.IMPRESSION, "u", 2, item_id="b"), {})  # type: ignore[arg-type]
    assert [item for _, item in restored.seen.recent] == ["a"]  # type: ignore[union-attr]
