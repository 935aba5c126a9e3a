"""Block events (event schema v2) in the user stage: counted, never learned, added to the user's block sets."""

from __future__ import annotations

from flink_jobs.messages import ItemTouch, RedisWrite, SetMember
from flink_jobs.redis_outbox import parking_key
from flink_jobs.user_steps import UserStageConfig, UserSteps
from online_models.bandits import BanditScope
from online_models.mf import MFConfig
from schemas import Event, EventType
from schemas.redis_keys import RedisKeys


def test_a_block_is_counted_not_learned_and_goes_to_the_users_block_set() -> None:
    keys = RedisKeys("t")
    steps = UserSteps(UserStageConfig(mf=MFConfig(n_factors=2), keys=keys, scopes=(BanditScope.GLOBAL,),
                                      session_gap_ms=1_800_000, impression_ttl_ms=600_000, top_k=5,
                                      score_refresh_ms=200, redis_shards=1), subtask=0)
    item = Event("e1", EventType.BLOCK, "u1", 1_000, item_id="i1")
    category = Event("e2", EventType.BLOCK, "u1", 2_000, category="shoes")
    record, out = steps.on_event(None, item, {})  # type: ignore[arg-type]
    record, more = steps.on_event(record, category, {})  # type: ignore[arg-type]
    writes = [o for o in out + more if isinstance(o, RedisWrite)]
    assert writes == [RedisWrite(keys.blocks("u1"), 1_000, SetMember("i1"), "u1"),
                      RedisWrite(keys.blocked_categories("u1"), 2_000, SetMember("shoes"), "u1")]
    assert not [o for o in out + more if isinstance(o, ItemTouch)]  # nothing learned, no popularity
    assert record is not None and record.counts == {"block": 2} and record.learned == 0 and record.session is None
    # Two blocks of one user wait side by side for the flush: neither replaces the other.
    assert parking_key(writes[0]) != parking_key(RedisWrite(keys.blocks("u1"), 3_000, SetMember("i2"), "u1"))
