"""Attribution without Flink: outcomes credited to the experiment variant whose list led to them, each once."""

from __future__ import annotations

from flink_jobs.attribution import ExperimentTally, Exposures, merge_tallies
from flink_jobs.shared_steps import Coalesced, ExperimentTotals
from flink_jobs.user_record import UserRecord
from flink_jobs.user_steps import UserStageConfig, UserSteps
from online_models.bandits import BanditScope
from online_models.mf import MFConfig
from schemas import Event, EventType, ServedItem, ServedList
from schemas.redis_keys import RedisKeys

WINDOW = 60_000


def served(request_id: str, items: tuple[str, ...], at: int, variant: str = "B", user: str = "u1",
           experiment: str | None = "home") -> ServedList:
    return ServedList(request_id, user, at, "recommendations", "model", "mf", "pulse", None, experiment, variant,
                      None, tuple(ServedItem(item, n, 1.0) for n, item in enumerate(items)))


def test_an_outcome_goes_to_the_named_list_else_to_the_newest_list_showing_the_item() -> None:
    lists = Exposures()
    lists.expose(served("r1", ("i1", "i2"), 1_000, variant="A"), max_lists=5)
    lists.expose(served("r2", ("i2", "i3"), 2_000, variant="B"), max_lists=5)
    assert lists.credit("click", "i9", "r1", 3_000, WINDOW) == ExperimentTally("home", "A", 3_000, clicked=1, clicks=1)
    by_item = lists.credit("click", "i2", None, 3_000, WINDOW)
    assert by_item is not None and by_item.variant == "B"  # the newest list that showed i2
    assert lists.credit("click", "i1", None, 1_000 + WINDOW + 1, WINDOW) is None  # too late for r1
    assert lists.credit("click", "i5", None, 3_000, WINDOW) is None  # shown by no list
    assert lists.credit("view", "i1", "r1", 3_000, WINDOW) is None  # views are not outcomes


def test_each_list_counts_once_per_outcome_kind_and_every_event_in_totals() -> None:
    lists = Exposures()
    lists.expose(served("r1", ("i1", "i2"), 1_000), max_lists=5)
    tallies = [lists.credit(kind, "i1", "r1", 2_000 + n, WINDOW)
               for n, kind in enumerate(["click", "click", "add_to_cart", "purchase", "purchase"])]
    (total,) = merge_tallies(t for t in tallies if t is not None)
    assert total.counts() == {"exposures": 0, "clicked": 1, "clicks": 2, "carted": 1, "purchased": 1, "purchases": 2}


def test_a_replayed_list_is_not_a_second_exposure_and_old_lists_make_room() -> None:
    lists = Exposures()
    assert lists.expose(served("r1", ("i1",), 1_000), max_lists=2) == [ExperimentTally("home", "B", 1_000, exposures=1)]
    assert lists.expose(served("r1", ("i1",), 1_000), max_lists=2) == []
    assert lists.expose(served("r0", ("i1",), 1_000, experiment=None), max_lists=2) == []
    lists.expose(served("r2", ("i2",), 2_000), max_lists=2)
    lists.expose(served("r3", ("i3",), 3_000), max_lists=2)
    assert list(lists.lists) == ["r2", "r3"]


def test_an_outcome_before_its_list_is_parked_and_credited_when_the_list_comes() -> None:
    # Two topics: a click can reach the job before the list it answers (a backlog, a replay).
    in_order, reversed_order = Exposures(), Exposures()
    in_order.expose(served("r1", ("i1",), 1_000), max_lists=5)
    first = [in_order.credit("click", "i1", "r1", 2_000, WINDOW),
             in_order.credit("purchase", "i1", "r1", 2_500, WINDOW)]
    assert reversed_order.credit("click", "i1", "r1", 2_000, WINDOW) is None
    assert reversed_order.credit("purchase", "i1", "r1", 2_500, WINDOW) is None
    assert len(reversed_order.parked) == 2
    later = reversed_order.expose(served("r1", ("i1",), 1_000), max_lists=5)
    assert merge_tallies(later) == merge_tallies([ExperimentTally("home", "B", 1_000, exposures=1),
                                                  *(t for t in first if t is not None)])
    assert reversed_order.parked == []
    # A parked outcome whose list never comes leaves once the window has passed; without a request id it is not kept.
    reversed_order.credit("click", "i9", "r9", 3_000, WINDOW)
    reversed_order.credit("click", "i8", None, 3_000 + WINDOW + 1, WINDOW)
    assert reversed_order.parked == []


def test_the_exposures_survive_the_users_state_round_trip() -> None:
    record = UserRecord()
    record.exposures.expose(served("r1", ("i1", "i2"), 1_000), max_lists=5)
    record.exposures.credit("click", "i1", "r1", 2_000, WINDOW)
    record.exposures.credit("click", "i1", "r7", 2_000, WINDOW)  # parked
    again = UserRecord.from_state(record.to_state())
    assert again == record and again.exposures.lists["r1"].flags == 1 and len(again.exposures.parked) == 1
    assert "served" not in UserRecord().to_state()  # users never exposed keep the old state shape


def test_the_user_steps_credit_a_click_and_the_experiment_stage_sums_the_variants() -> None:
    steps = UserSteps(UserStageConfig(mf=MFConfig(n_factors=2), keys=RedisKeys("t"), scopes=(BanditScope.GLOBAL,),
                                      session_gap_ms=1_800_000, impression_ttl_ms=600_000, top_k=5,
                                      score_refresh_ms=200, redis_shards=1, attribution=True,
                                      attribution_window_ms=WINDOW), subtask=0)
    record, out = steps.on_served(None, served("r1", ("i1", "i2"), 1_000))
    assert out == [ExperimentTally("home", "B", 1_000, exposures=1)]
    click = Event("e1", EventType.CLICK, "u1", 5_000, item_id="i2", context={"request_id": "r1"})
    record, out = steps.on_event(record, click, {})  # type: ignore[arg-type]
    tallies = [o for o in out if isinstance(o, ExperimentTally)]
    assert tallies == [ExperimentTally("home", "B", 5_000, clicked=1, clicks=1)]

    totals = ExperimentTotals(RedisKeys("t"), WINDOW)
    value = None
    for tally in [ExperimentTally("home", "A", 1, exposures=1), ExperimentTally("home", "B", 1, exposures=1),
                  *tallies]:
        value = totals.apply(value, tally)
    (write,) = totals.writes("home", Coalesced(value, 5_000), final=False)
    assert write.key == "t:experiment:home" and write.payload == {
        "experiment": "home", "window_ms": WINDOW,
        "variants": {"A": {"exposures": 1, "clicked": 0, "clicks": 0, "carted": 0, "purchased": 0, "purchases": 0},
                     "B": {"exposures": 1, "clicked": 1, "clicks": 1, "carted": 0, "purchased": 0, "purchases": 0}}}


def test_lists_older_than_the_window_before_the_newest_leave() -> None:
    lists = Exposures()
    lists.expose(served("r1", ("i1",), 1_000), max_lists=100, window_ms=WINDOW)
    lists.expose(served("r2", ("i2",), 1_000 + WINDOW), max_lists=100, window_ms=WINDOW)
    assert list(lists.lists) == ["r1", "r2"]
    lists.expose(served("r3", ("i3",), 1_001 + WINDOW), max_lists=100, window_ms=WINDOW)
    assert list(lists.lists) == ["r2", "r3"]


def test_a_list_older_than_the_window_still_takes_the_outcomes_parked_for_it() -> None:
    lists = Exposures()
    lists.expose(served("r2", ("i2",), 10 * WINDOW), max_lists=100, window_ms=WINDOW)
    assert lists.credit("click", "i1", "r1", 2_000, WINDOW) is None  # r1 is older, and late
    tallies = lists.expose(served("r1", ("i1",), 1_000), max_lists=100, window_ms=WINDOW)
    assert [t.counts()["exposures"] + t.counts()["clicked"] for t in tallies] == [1, 1]
    assert list(lists.lists) == ["r2"]
