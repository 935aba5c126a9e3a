from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from producers.sources import SOURCE_HELP, SOURCE_SCHEMES, open_source, parse_synthetic_overrides
from producers.sources.synthetic import SyntheticConfig, synthetic_events


def test_plain_synthetic_uses_the_seed() -> None:
    events = list(open_source("synthetic", seed=3, limit=50))
    assert events == list(synthetic_events(SyntheticConfig(seed=3), limit=50))
    assert events != list(open_source("synthetic", seed=4, limit=50))


def test_synthetic_overrides() -> None:
    events = list(open_source("synthetic:users=10,items=40,impressions=0", limit=500))
    assert {int(e.user_id[1:]) for e in events} <= set(range(10))
    assert {int(str(e.item_id)[1:]) for e in events} <= set(range(40))
    assert all(e.type.value != "impression" for e in events)


def test_synthetic_without_limit_is_endless() -> None:
    source = open_source("synthetic:users=10,items=20")
    assert len(list(itertools.islice(source, 20_000))) == 20_000


def test_override_parsing() -> None:
    config = parse_synthetic_overrides(
        "users=1000, items=5_000, zipf=1.3, gap_ms=600000, seed=9, cart=0.05, n_segments=3", seed=1
    )
    assert config == SyntheticConfig(
        seed=9,
        n_users=1000,
        n_items=5000,
        zipf_exponent=1.3,
        session_gap_ms=600_000,
        n_segments=3,
        mix=parse_synthetic_overrides("add_to_cart=0.05").mix,
    )
    assert parse_synthetic_overrides("", seed=5) == SyntheticConfig(seed=5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("synthetic:colour=red", "unknown synthetic option 'colour'; valid: .*users"),
        ("synthetic:users", "not key=value"),
        ("synthetic:users=many", "users='many'"),
        ("synthetic:users=0", "n_users must be >= 1"),
        ("synthetic:click=0.9", "funnel"),
    ],
)
def test_bad_synthetic_specs(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_source(spec)


def test_unknown_scheme_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: synthetic, movielens, obd, jsonl"):
        open_source("kafka:events")


@pytest.mark.parametrize("scheme", ["movielens", "jsonl", "obd"])
def test_missing_path_argument(scheme: str) -> None:
    with pytest.raises(ValueError, match="needs a path"):
        open_source(f"{scheme}:")


@pytest.mark.parametrize("scheme", ["movielens", "jsonl", "obd"])
def test_missing_file_names_it(tmp_path: Path, scheme: str) -> None:
    missing = tmp_path / f"missing-{scheme}.data"
    with pytest.raises(FileNotFoundError, match=f"missing-{scheme}\\.data"):
        open_source(f"{scheme}:{missing}")


def test_file_sources_and_limit(tmp_path: Path) -> None:
    ml = tmp_path / "u.data"
    ml.write_text("1\t2\t3\t881250949\n4\t5\t1\t881250950\n6\t7\t2\t881250951\n")
    assert [e.user_id for e in open_source(f"movielens:{ml}")] == ["1", "4", "6"]
    assert [e.user_id for e in open_source(f"movielens:{ml}", limit=2)] == ["1", "4"]
    js = tmp_path / "otto.jsonl"
    js.write_text('{"session": 5, "events": [{"aid": 1, "ts": 1659304800025, "type": "orders"}]}\n')
    assert [e.event_id for e in open_source(f"jsonl:{js}")] == ["otto-5-0"]


def test_obd_source_reads_a_csv(tmp_path: Path) -> None:
    folder = tmp_path / "random" / "men"
    folder.mkdir(parents=True)
    csv = folder / "men.csv"
    csv.write_text(
        ",timestamp,item_id,position,click,propensity_score,"
        "user_feature_0,user_feature_1,user_feature_2,user_feature_3\n"
        "7,2019-11-24 00:03:13.442536+00:00,14,3,1,0.0294,a,b,c,d\n"
    )
    events = list(open_source(f"obd:{csv}"))
    assert [e.type.value for e in events] == ["impression", "click"]


def test_help_mentions_every_scheme() -> None:
    assert all(scheme in SOURCE_HELP for scheme in SOURCE_SCHEMES)
