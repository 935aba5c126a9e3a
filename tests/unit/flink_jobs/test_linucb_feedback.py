"""LinUCB in the job without Flink: a pending impression keeps the context its decision used, its feedback
carries it, and the bandit stage learns from it and writes the table serving decides from."""

from __future__ import annotations

import pickle

from flink_jobs.messages import BanditFeedback
from flink_jobs.shared_steps import BanditArms, Coalesced
from flink_jobs.user_steps import UserSteps
from online_models.bandits import BanditScope, LinUCB
from schemas import Decision, Event, EventType
from schemas.redis_keys import RedisKeys
from tests.unit.flink_jobs.test_user_steps import MINUTE, config, of_type

KEYS = RedisKeys("t")
CONTEXT = {"segment": "men", "user_feature_0": "f0", "decision_point": "home", "bandit_scope": "global"}


def _shown(request_id: str, arm: str, t: int, **context: str) -> Event:
    return Event(f"imp-{request_id}", EventType.IMPRESSION, "u1", t, arm, context={**CONTEXT, **context},
                 decision=Decision(request_id, "linucb", arm, 1.0))


def test_the_feedback_carries_the_impressions_context_entries_linucb_reads() -> None:
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL,), bandit_context=("segment", "user_feature_0", "absent")),
                      subtask=0)
    impressions: dict = {}
    record, _ = steps.on_event(None, _shown("r1", "a", 1000), impressions)
    record, _ = steps.on_event(record, _shown("r2", "b", 2000, segment="women"), impressions)
    kept = (("segment", "men"), ("user_feature_0", "f0"))
    assert impressions["r1"] == ("a", ["global"], 1000 + 10 * MINUTE, None, None, kept)
    click = Event("c1", EventType.CLICK, "u1", 3000, "a", context={"request_id": "r1"})
    record, outputs = steps.on_event(record, click, impressions)
    assert of_type(outputs, BanditFeedback) == [BanditFeedback("global", "a", 1.0, 3000, kept)]
    _, outputs = steps.on_event_timer("u1", record, 2000 + 10 * MINUTE, impressions)
    women = (("segment", "women"), ("user_feature_0", "f0"))
    assert of_type(outputs, BanditFeedback) == [BanditFeedback("global", "b", 0.0, 2000 + 10 * MINUTE, women)]


def test_without_linucb_a_pending_impression_is_stored_as_before() -> None:
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL,)), subtask=0)
    impressions: dict = {}
    steps.on_event(None, _shown("r1", "a", 1000), impressions)
    assert impressions == {"r1": ("a", ["global"], 1000 + 10 * MINUTE)}


def test_the_bandit_stage_learns_linucb_with_the_context_and_writes_its_state() -> None:
    stage = BanditArms("linucb", KEYS, (("alpha", 0.5), ("features", ("segment", "user_feature_0"))))
    feedback = [BanditFeedback("global", "a", 1.0, 10, (("segment", "men"),)),
                BanditFeedback("global", "b", 0.0, 11, (("segment", "men"), ("user_feature_0", "f1"))),
                BanditFeedback("global", "a", 0.0, 12)]
    value = None
    for update in feedback:
        value = stage.apply(value, pickle.loads(pickle.dumps(update)))
    expected = LinUCB(alpha=0.5, features=("segment", "user_feature_0"))
    for update in feedback:
        expected.update(update.arm, update.reward, dict(update.context) or None)
    assert isinstance(value, LinUCB) and value.to_bytes() == expected.to_bytes()
    (write,) = stage.writes("global", Coalesced(value, 12, True), final=False)
    assert write.key == KEYS.bandit("linucb", "global") and write.event_time_ms == 12
    assert write.payload["policy"] == "linucb" and write.payload["arms"] == {"a": [2.0, 1.0], "b": [1.0, 0.0]}
    assert LinUCB.from_table_payload(write.payload).to_bytes() == expected.to_bytes()


def test_other_policies_ignore_the_context() -> None:
    stage = BanditArms("ts", KEYS)
    value = stage.apply(None, BanditFeedback("global", "a", 1.0, 10, (("segment", "men"),)))
    (write,) = stage.writes("global", Coalesced(value, 10, True), final=False)
    assert write.payload["arms"] == {"a": [1.0, 0.0]} and "state" not in write.payload
