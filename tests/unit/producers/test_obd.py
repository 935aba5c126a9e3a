"""producers.sources.obd on the shared Open Bandit Dataset sample (skips without it, outside CI)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from online_models.off_policy import logged_rows
from producers.sources.obd import read_obd
from schemas.codec import EventCodec
from schemas.events import EventType

# Clicks per 10,000-row file, from ../shared/data/README.md.
CLICKS = {("random", "men"): 46, ("bts", "men"): 69, ("random", "all"): 38, ("bts", "all"): 42}


def _csv(shared_data: Path, policy: str, campaign: str) -> Path:
    return shared_data / "obd" / policy / campaign / f"{campaign}.csv"


@pytest.mark.parametrize(("policy", "campaign"), sorted(CLICKS))
def test_impressions_and_clicks_match_the_published_counts(shared_data: Path, policy: str, campaign: str) -> None:
    events = list(read_obd(_csv(shared_data, policy, campaign)))
    types = Counter(e.type for e in events)
    assert types == {EventType.IMPRESSION: 10_000, EventType.CLICK: CLICKS[policy, campaign]}
    assert len({e.event_id for e in events}) == len(events)
    rows = logged_rows(events)
    assert len(rows) == 10_000 and sum(r.reward for r in rows) == CLICKS[policy, campaign]


def test_men_random_events(shared_data: Path) -> None:
    events = list(read_obd(_csv(shared_data, "random", "men")))
    first = events[0]
    assert first.event_id == "obd-men-random-0-imp"
    assert first.decision is not None
    assert first.decision.request_id == "obd-men-random-0"
    assert first.decision.policy == "random" and first.decision.arm == first.item_id == "14"
    assert first.decision.propensity == pytest.approx(1 / 34)
    assert first.context["position"] == "3" and first.context["segment"] == first.context["campaign"] == "men"
    assert first.user_id.startswith("obd-") and len(first.user_id) == 16
    assert first.event_time_ms == 1574553793442  # 2019-11-24 00:03:13.442536+00:00
    assert {e.item_id for e in events if e.type is EventType.IMPRESSION} == {str(i) for i in range(34)}

    impressions = {e.decision.request_id: e for e in events if e.decision is not None}
    for click in (e for e in events if e.type is EventType.CLICK):
        shown = impressions[click.context["request_id"]]
        assert click.event_id == shown.decision.request_id + "-click"  # type: ignore[union-attr]
        assert (click.user_id, click.item_id, click.value) == (shown.user_id, shown.item_id, 1.0)
        assert click.event_time_ms == shown.event_time_ms + 1
        assert click.context["position"] == shown.context["position"]


def test_events_pass_the_event_codec(shared_data: Path) -> None:
    codec = EventCodec()
    for event in list(read_obd(_csv(shared_data, "bts", "women")))[:500]:
        assert codec.decode(codec.encode(event)) == event


def test_same_features_same_user(shared_data: Path) -> None:
    events = [e for e in read_obd(_csv(shared_data, "random", "all")) if e.type is EventType.IMPRESSION]
    by_features = {}
    for e in events:
        key = tuple(e.context[f"user_feature_{i}"] for i in range(4))
        assert by_features.setdefault(key, e.user_id) == e.user_id
    assert len(set(by_features.values())) == len(by_features)


def test_path_fallback_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text(
        ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,"
        "user_feature_3\n3,2019-11-24T00:00:00,5,1,0,0.5,a,b,c,d\n"
    )
    (event,) = read_obd(path)
    assert event.decision is not None and event.decision.request_id == "obd-log-logged-3"
    assert event.event_time_ms == 1574553600000  # naive timestamp read as UTC
    (event,) = read_obd(path, policy="bts", campaign="women")
    assert event.decision is not None and event.decision.request_id == "obd-women-bts-3"
    assert event.context["segment"] == "women"


def test_errors_name_the_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_obd(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text(
        ",timestamp,item_id,position,click,propensity_score,user_feature_0,user_feature_1,user_feature_2,"
        "user_feature_3\n0,2019-11-24 00:00:00+00:00,5,1,0,0.0,a,b,c,d\n"
    )
    with pytest.raises(ValueError, match=r"bad.csv:2: propensity_score 0.0"):
        list(read_obd(bad))
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        list(read_obd(other))
