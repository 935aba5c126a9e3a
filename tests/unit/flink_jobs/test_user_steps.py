"""The user stage's logic without Flink: acknowledgements, out-of-order snapshots, the unacked trim,
erasure, session close, the impression->reward join and progress reports."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from flink_jobs.item_replica import MAX_UNACKED, ItemReplica
from flink_jobs.messages import (
    BanditFeedback,
    ClosedSession,
    EraseUser,
    ForgetScope,
    ItemSnapshot,
    ItemTouch,
    ModelProgress,
    RedisWrites,
)
from flink_jobs.user_steps import (
    REPORT_EVERY,
    CancelTimer,
    EventTimer,
    LateEvent,
    RefreshTimer,
    RewardUnmatched,
    UserRecord,
    UserStageConfig,
    UserSteps,
)
from online_models.bandits import BanditScope, make_bandit
from online_models.mf import ItemParams, MFConfig
from schemas import Decision, Event, EventType
from schemas.redis_keys import RedisKeys, UserKind
from schemas.redis_values import CompactValue, UserValue, decode_user_value, with_header

MINUTE = 60_000
GAP = 30 * MINUTE


def config(**overrides: object) -> UserStageConfig:
    values: dict[str, object] = {
        "mf": MFConfig(n_factors=4),
        "keys": RedisKeys("t"),
        "scopes": (BanditScope.GLOBAL, BanditScope.USER),
        "session_gap_ms": GAP,
        "impression_ttl_ms": 10 * MINUTE,
        "top_k": 5,
        "score_refresh_ms": 200,
        "redis_shards": 2,
    }
    values.update(overrides)
    return UserStageConfig(**values)  # type: ignore[arg-type]


def event(n: int, kind: EventType = EventType.VIEW, t: int | None = None, user: str = "u1", **kw: object) -> Event:
    return Event(f"e{n}", kind, user, n * 1000 if t is None else t, **kw)  # type: ignore[arg-type]


def of_type(outputs: list[object], kind: type) -> list:
    return [o for o in outputs if isinstance(o, kind)]


def snapshot(item: str, version: int, bias: float, acks: dict[int, int]) -> ItemSnapshot:
    return ItemSnapshot(item, version, 0, ItemParams(bias, np.zeros(4)).to_bytes(), acks)


# -- the item replica -----------------------------------------------------------------------


def replica_with_updates(n: int) -> ItemReplica:
    replica = ItemReplica(MFConfig(n_factors=4), subtask=1)
    for _ in range(n):
        old = replica.items.get("i1")
        replica.learned("i1", old, ItemParams(old.bias + 1.0, old.factors + 1.0))
    return replica


def test_a_snapshot_adds_back_only_the_updates_it_does_not_acknowledge() -> None:
    replica = replica_with_updates(3)  # seq 1, 2, 3: each +1 on the bias
    assert replica.take(snapshot("i1", 5, 10.0, acks={1: 2, 0: 7}))  # includes seq 1-2 of subtask 1
    assert replica.items.get("i1").bias == pytest.approx(11.0)  # + seq 3 only
    assert [u.seq for u in replica.unacked["i1"]] == [3]
    assert replica.take(snapshot("i1", 6, 20.0, acks={1: 3}))  # now seq 3 is in too
    assert replica.items.get("i1").bias == pytest.approx(20.0)
    assert replica.unacked["i1"] == []


def test_another_subtasks_acks_do_not_count_as_ours() -> None:
    replica = replica_with_updates(2)
    replica.take(snapshot("i1", 1, 0.0, acks={0: 2}))
    assert replica.items.get("i1").bias == pytest.approx(2.0)


def test_an_older_snapshot_arriving_late_is_ignored() -> None:
    replica = replica_with_updates(0)
    assert replica.take(snapshot("i1", 7, 3.0, acks={}))
    assert not replica.take(snapshot("i1", 6, -1.0, acks={}))  # overtaken on another partition
    assert not replica.take(snapshot("i1", 7, -1.0, acks={}))
    assert replica.items.get("i1").bias == pytest.approx(3.0)
    assert replica.snapshot_versions["i1"] == 7


def test_unacked_updates_are_trimmed_to_the_bound() -> None:
    replica = replica_with_updates(MAX_UNACKED + 10)
    pending = replica.unacked["i1"]
    assert len(pending) == MAX_UNACKED
    assert [pending[0].seq, pending[-1].seq] == [11, MAX_UNACKED + 10]  # the oldest went


# -- events -----------------------------------------------------------------------------------


def test_a_rating_is_learned_and_touches_its_item() -> None:
    steps = UserSteps(config(), subtask=3)
    record, outputs = steps.on_event(None, event(1, EventType.RATING, item_id="i1", value=4.0), {})
    assert record is not None
    assert record.counts == {"rating": 1} and record.learned == 1 and record.factors is not None
    assert record.progress.learned == 1 and record.progress.squared_error > 0
    (touch,) = of_type(outputs, ItemTouch)
    assert (touch.item_id, touch.sender, touch.seq) == ("i1", 3, 1) and touch.d_factors is not None
    assert of_type(outputs, RefreshTimer) == [RefreshTimer()]
    assert of_type(outputs, EventTimer) == [EventTimer(1000 + GAP)]  # the session's deadline
    _, again = steps.on_event(record, event(2, EventType.RATING, item_id="i1", value=4.0), {})
    assert of_type(again, RefreshTimer) == [] and of_type(again, EventTimer) == []  # one timer each at a time


def test_the_steps_learn_exactly_the_events_the_targets_say() -> None:
    """`EventTargets.learns_from` is the job's rule (the demo counts learnable events with it)."""
    steps, targets = UserSteps(config(), subtask=0), MFConfig().targets
    record, learnable = None, 0
    kinds = [EventType.VIEW, EventType.CLICK, EventType.IMPRESSION, EventType.ADD_TO_CART, EventType.PURCHASE,
             EventType.BLOCK, EventType.RATING]
    for n in range(70):
        kind = kinds[n % len(kinds)]
        extra: dict[str, object] = {"value": 3.0} if kind is EventType.RATING else {}
        if kind is EventType.IMPRESSION:
            extra["decision"] = Decision(f"r{n}", "p", f"i{n % 5}", 0.5)
        item = None if n % 3 == 0 else f"i{n % 5}"
        if kind is EventType.BLOCK and item is None:
            extra["category"] = "books"  # a block names an item or a category
        e = event(n, kind, item_id=item, **extra)
        if kind is EventType.IMPRESSION and item is None:
            continue  # an impression names its item
        learnable += targets.learns_from(e)
        record, _ = steps.on_event(record, e, {})
    assert record is not None and 0 < learnable < sum(record.counts.values()) and record.learned == learnable


def test_progress_is_reported_every_report_every_events() -> None:
    steps = UserSteps(config(), subtask=0)
    record: UserRecord | None = None
    reports: list[ModelProgress] = []
    for n in range(REPORT_EVERY):
        record, outputs = steps.on_event(record, event(n, EventType.RATING, item_id=f"i{n % 7}", value=3.0), {})
        reports += of_type(outputs, ModelProgress)
    assert [r.learned for r in reports] == [REPORT_EVERY]
    assert record is not None and not record.progress.any()


def test_erase_reports_progress_forgets_impressions_and_the_users_bandit() -> None:
    steps = UserSteps(config(), subtask=0)
    record, _ = steps.on_event(None, event(1, EventType.RATING, item_id="i1", value=5.0), {})
    impressions = {"r1": ("a", ["global"], 999)}
    record, outputs = steps.on_event(record, event(2, EventType.ERASE), impressions)
    assert record is None and impressions == {}
    assert [type(o) for o in outputs] == [ModelProgress, EraseUser, ForgetScope]
    assert outputs[0].learned == 1  # what the user taught the model stays counted
    assert outputs[2].scope_key == "user:u1"


def test_erase_of_an_unknown_user_without_user_scope() -> None:
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL,)), subtask=0)
    record, outputs = steps.on_event(None, event(1, EventType.ERASE), {})
    assert record is None and outputs == [EraseUser("u1", 1000)]


def test_a_click_is_joined_to_its_impression_once() -> None:
    steps = UserSteps(config(), subtask=0)
    impressions: dict = {}
    shown = event(1, EventType.IMPRESSION, item_id="i1", decision=Decision("r1", "ts", "arm-a", 0.5))
    record, outputs = steps.on_event(None, shown, impressions)
    assert impressions == {"r1": ("arm-a", ["global", "user:u1"], 1000 + 10 * MINUTE)}
    assert EventTimer(1000 + 10 * MINUTE) in outputs
    click = event(2, EventType.CLICK, item_id="i1", context={"request_id": "r1"})
    record, outputs = steps.on_event(record, click, impressions)
    assert of_type(outputs, BanditFeedback) == [
        BanditFeedback("global", "arm-a", 1.0, 2000), BanditFeedback("user:u1", "arm-a", 1.0, 2000)]
    assert impressions == {}
    record, outputs = steps.on_event(record, event(3, EventType.CLICK, item_id="i1", context={"request_id": "r1"}),
                                     impressions)
    assert of_type(outputs, RewardUnmatched) == [RewardUnmatched()] and of_type(outputs, BanditFeedback) == []
    assert record is not None and (record.progress.rewards_matched, record.progress.rewards_unmatched) == (1, 1)


def test_an_impression_expires_with_reward_zero() -> None:
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL,)), subtask=0)
    impressions: dict = {}
    shown = event(1, EventType.IMPRESSION, item_id="i1", decision=Decision("r1", "ts", "arm-a", 0.5))
    record, _ = steps.on_event(None, shown, impressions)
    expires = 1000 + 10 * MINUTE
    record, outputs = steps.on_event_timer("u1", record, expires, impressions)
    assert of_type(outputs, BanditFeedback) == [BanditFeedback("global", "arm-a", 0.0, expires)]
    assert impressions == {}


def test_a_timer_on_a_later_watermark_expires_every_due_impression_and_cancels_their_timers() -> None:
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL,)), subtask=0)
    impressions: dict = {}
    record = None
    for n in (1, 2, 3):
        shown = event(n, EventType.IMPRESSION, item_id="i1", decision=Decision(f"r{n}", "ts", f"arm-{n}", 0.5))
        record, _ = steps.on_event(record, shown, impressions)
    deadline = [n * 1000 + 10 * MINUTE for n in (1, 2, 3)]
    # A restored job's first watermark is past two deadlines: the first timer takes both, and the
    # second one's timer is cancelled; the third impression waits for its own.
    record, outputs = steps.on_event_timer("u1", record, deadline[0], impressions, watermark_ms=deadline[1])
    assert of_type(outputs, BanditFeedback) == [BanditFeedback("global", "arm-1", 0.0, deadline[0]),
                                                BanditFeedback("global", "arm-2", 0.0, deadline[1])]
    assert of_type(outputs, CancelTimer) == [CancelTimer(deadline[1])]
    assert list(impressions) == ["r3"]
    record, outputs = steps.on_event_timer("u1", record, deadline[2], impressions, watermark_ms=deadline[2])
    assert of_type(outputs, BanditFeedback) == [BanditFeedback("global", "arm-3", 0.0, deadline[2])]
    assert of_type(outputs, CancelTimer) == [] and impressions == {}


def test_a_session_over_by_the_watermark_closes_on_the_first_timer_and_its_own_timer_is_cancelled() -> None:
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL,)), subtask=0)
    impressions: dict = {}
    record, _ = steps.on_event(None, event(1, t=0, item_id="i1"), impressions)
    shown = event(2, EventType.IMPRESSION, t=MINUTE, item_id="i1", decision=Decision("r1", "ts", "arm-a", 0.5))
    record, _ = steps.on_event(record, shown, impressions)
    assert record is not None and record.session_timer == GAP
    # The impression's deadline (11 min) fires first; the watermark is already past the session's end.
    record, outputs = steps.on_event_timer("u1", record, 11 * MINUTE, impressions, watermark_ms=2 * GAP)
    assert len(of_type(outputs, ClosedSession)) == 1 and of_type(outputs, CancelTimer) == [CancelTimer(GAP)]
    assert record is not None and record.session is None and record.session_timer is None
    assert of_type(outputs, EventTimer) == []


@pytest.mark.parametrize("seed", range(20))
def test_firing_on_the_watermark_gives_what_one_timer_at_a_time_gave(seed: int) -> None:
    """Same feedback, closed sessions and state as firing each timer alone, with fewer timers fired."""
    rng = np.random.default_rng(seed)
    stream, t = [], 0
    for n in range(60):
        t += int(rng.integers(0, 4 * MINUTE))
        kind = EventType.IMPRESSION if rng.random() < 0.5 else EventType.VIEW
        decision = Decision(f"r{n}", "ts", f"arm-{n % 3}", 0.5) if kind is EventType.IMPRESSION else None
        context = {"request_id": f"r{n - 1}"} if kind is EventType.VIEW and rng.random() < 0.2 else {}
        stream.append((event(n, kind, t=t, item_id="i1", decision=decision, context=context),
                       t + int(rng.integers(0, 40 * MINUTE))))  # the watermark after it
    results = []
    for use_watermark in (False, True):
        steps = UserSteps(config(scopes=(BanditScope.GLOBAL,)), subtask=0)
        impressions: dict = {}
        record, timers, fired, seen = None, set(), 0, []
        watermark = 0
        for shown, next_watermark in [*stream, (None, 10**9)]:
            if shown is not None:
                record, outputs = steps.on_event(record, shown, impressions)
                timers |= {o.at_ms for o in of_type(outputs, EventTimer)}
                seen += of_type(outputs, BanditFeedback)
            watermark = max(watermark, next_watermark)
            while timers and min(timers) <= watermark:  # Flink: due timers in time order
                at = min(timers)
                timers.discard(at)
                fired += 1
                record, outputs = steps.on_event_timer("u1", record, at, impressions,
                                                       watermark if use_watermark else None)
                timers |= {o.at_ms for o in of_type(outputs, EventTimer)}
                timers -= {o.at_ms for o in of_type(outputs, CancelTimer)}
                seen += [o for o in outputs if isinstance(o, BanditFeedback | ClosedSession)]
        session = record.session if record else None
        results.append((sorted(one_line_each(seen)), impressions, session, fired))
    (one_at_a_time, *rest_one), (on_watermark, *rest_watermark) = results
    assert on_watermark == one_at_a_time and rest_watermark[:2] == rest_one[:2]
    assert rest_watermark[2] < rest_one[2]  # fewer timers fired


def one_line_each(outputs: list) -> Iterator[str]:
    """Feedback as one line per impression it stands for (``count``); a closed session without its wall clock."""
    wall_clock = re.compile(r'"closed_at_ms":\d+')  # when the summary was written, not what it says
    for output in outputs:
        if isinstance(output, BanditFeedback):
            yield from [repr((output.scope_key, output.arm, output.reward, output.context))] * output.count
        else:
            yield wall_clock.sub("", repr(output))


def test_impressions_expiring_together_are_one_message_per_scope_and_arm_and_teach_the_bandit_the_same() -> None:
    # A restored job's first watermark: 30 impressions of two arms, all due at once.
    steps = UserSteps(config(scopes=(BanditScope.GLOBAL, BanditScope.USER)), subtask=0)
    impressions: dict = {}
    record = None
    for n in range(30):
        shown = event(n, EventType.IMPRESSION, t=n * 1000, item_id="i1",
                      decision=Decision(f"r{n}", "ts", f"arm-{n % 2}", 0.5))
        record, _ = steps.on_event(record, shown, impressions)
    record, outputs = steps.on_event_timer("u1", record, 10 * MINUTE, impressions, 10**9)
    feedback = of_type(outputs, BanditFeedback)
    latest = {arm: max(n * 1000 for n in range(30) if n % 2 == int(arm[-1])) + 10 * MINUTE
              for arm in ("arm-0", "arm-1")}
    assert sorted((f.scope_key, f.arm, f.count, f.event_time_ms) for f in feedback) == [
        (scope, arm, 15, latest[arm]) for scope in ("global", "user:u1") for arm in ("arm-0", "arm-1")]
    assert impressions == {}
    one_each, together = make_bandit("ts"), make_bandit("ts")  # the global scope's bandit
    for n in range(30):  # as one message per impression taught it
        one_each.update(f"arm-{n % 2}", 0.0)
    for f in feedback:
        if f.scope_key == "global":
            together.update(f.arm, f.reward, None, f.count)
    assert together.to_bytes() == one_each.to_bytes()


# -- sessions ---------------------------------------------------------------------------------


def test_the_session_closes_on_its_timer_and_the_users_keys_are_rewritten() -> None:
    steps = UserSteps(config(), subtask=0)
    record, _ = steps.on_event(None, event(1, t=0, item_id="i1", context={"category": "books"}), {})
    record, _ = steps.on_event(record, event(2, t=MINUTE, item_id="i2"), {})
    assert record is not None and record.session_timer == GAP  # set once, on the first event
    record, outputs = steps.on_event_timer("u1", record, GAP, {})  # fires early: the session went on
    assert of_type(outputs, ClosedSession) == [] and of_type(outputs, EventTimer) == [EventTimer(MINUTE + GAP)]
    record, outputs = steps.on_event_timer("u1", record, MINUTE + GAP, {})
    (closed,) = of_type(outputs, ClosedSession)
    assert b'"n_events":2' in closed.summary_json and b'"dwell_ms":60000' in closed.summary_json
    assert record is not None and record.session is None and record.session_timer is None
    (writes,) = of_type(outputs, RedisWrites)
    assert stored(writes).payload(UserKind.SESSION) == {"open": False, "history": ["i2", "i1"]}


def test_the_items_of_closed_sessions_outlive_them_newest_first_and_bounded() -> None:
    steps = UserSteps(config(), subtask=0)
    record = None
    for n in range(30):  # 30 sessions of one item each: every event starts a new session
        record, _ = steps.on_event(record, event(n, t=n * 2 * GAP, item_id=f"i{n % 25}"), {})
    assert record is not None and record.history == tuple(f"i{n % 25}" for n in range(28, 8, -1))
    record, outputs = steps.on_refresh("u1", record)  # the open session (i4) and the history both stored
    session = stored(of_type(outputs, RedisWrites)[0]).payload(UserKind.SESSION)
    assert session["open"] and session["recent_items"] == ["i4"] and session["history"][:2] == ["i3", "i2"]
    assert UserRecord.from_state(record.to_state()).history == record.history


def test_a_late_event_is_counted_not_lost() -> None:
    steps = UserSteps(config(), subtask=0)
    record, _ = steps.on_event(None, event(1, t=10 * MINUTE, item_id="i1"), {})
    record, outputs = steps.on_event(record, event(2, t=0, item_id="i2"), {})  # 10 min behind: too late
    assert of_type(outputs, LateEvent) == [LateEvent()]
    assert record is not None and record.progress.late_events == 1


def test_refresh_writes_the_users_keys_and_reports() -> None:
    steps = UserSteps(config(), subtask=0)
    record, _ = steps.on_event(None, event(1, EventType.RATING, item_id="i1", value=4.0), {})
    assert record is not None and record.due
    record, outputs = steps.on_refresh("u1", record)
    assert not record.due
    (writes,) = of_type(outputs, RedisWrites)
    assert [w.key for w in writes.writes] == [RedisKeys("t").user_record("u1")]  # one compact value
    assert set(stored(writes).parts) == set(UserKind)
    assert [type(o) for o in outputs] == [RedisWrites, ModelProgress]


def test_the_legacy_format_writes_one_hash_per_part() -> None:
    steps = UserSteps(replace(config(), value_format="legacy"), subtask=0)
    record, _ = steps.on_event(None, event(1, EventType.RATING, item_id="i1", value=4.0), {})
    assert record is not None
    (writes,) = of_type(steps.on_refresh("u1", record)[1], RedisWrites)
    keys = RedisKeys("t")
    expected = [keys.counts("u1"), keys.session("u1"), keys.factors("u1"), keys.recs("u1")]
    assert [w.key for w in writes.writes] == expected
    compact = UserSteps(config(), subtask=0)
    record, _ = compact.on_event(None, event(1, EventType.RATING, item_id="i1", value=4.0), {})
    assert record is not None
    (same,) = of_type(compact.on_refresh("u1", record)[1], RedisWrites)
    assert [w.payload for w in writes.writes][:2] == [stored(same).payload(k) for k in ("counts", "session")]


def stored(writes: RedisWrites) -> UserValue:
    """The one compact user value of a snapshot, decoded as serving would read it."""
    (write,) = writes.writes
    assert isinstance(write.payload, CompactValue)
    return decode_user_value(with_header(write.payload.body, write.event_time_ms, 0, "mf"))


def test_a_record_round_trips_through_the_state_dict_and_old_records_load() -> None:
    old = {"counts": {"view": 1}, "learned": 0, "session": None, "factors": None, "t": 7}  # before pending/due
    record = UserRecord.from_state(old)
    assert record == UserRecord(counts={"view": 1}, t=7)
    assert UserRecord.from_state(record.to_state()) == record
