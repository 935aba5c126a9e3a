"""Catalogue sources: the synthetic world's items (ids, categories, planted tastes), OBD and JSON lines."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from producers.catalogue import open_catalogue, synthetic_catalogue, user_tastes
from producers.catalogue.files import OBD_CATEGORY, read_item_jsonl, read_obd_items
from producers.sources import open_source
from producers.sources.obd import read_obd
from producers.sources.synthetic import SyntheticConfig, synthetic_events
from pulse.cli import app
from schemas import ItemCodec

PLANTED = SyntheticConfig(seed=5, n_users=400, n_items=1_000, n_categories=8, taste=0.7)


@pytest.fixture(scope="module")
def planted_stream() -> list:
    """Visits only: the logging policy's arms (impressions and their reward clicks) ignore tastes."""
    return [
        e for e in synthetic_events(PLANTED, limit=40_000)
        if e.item_id is not None and e.decision is None and "request_id" not in e.context
    ]


def test_items_and_categories_are_those_of_the_event_stream() -> None:
    spec = "synthetic:users=300,items=500"
    catalogue = {item.item_id: item for item in open_catalogue(spec, seed=3)}
    assert len(catalogue) == 500
    assert set(catalogue) == {f"i{k}" for k in range(500)}
    seen = 0
    for event in open_source(spec, seed=3, limit=5_000):
        if event.item_id is not None:
            assert catalogue[event.item_id].category == event.context["category"], event
            seen += 1
    assert seen > 4_000


def test_planted_tastes_users_of_a_taste_visit_its_category(planted_stream: list) -> None:
    """The catalogue's category of an item is the taste of the users who visit it most."""
    category = {item.item_id: item.category for item in synthetic_catalogue(PLANTED)}
    taste = user_tastes(PLANTED)
    same = sum(category[e.item_id] == taste[e.user_id] for e in planted_stream)
    share = same / len(planted_stream)
    assert share > 0.7, share  # the taste share (0.7) of visits, plus 1/8 of the rest by chance
    # per category: the users who visit its items most are users with that taste
    visitors: dict[str, Counter[str]] = defaultdict(Counter)
    for e in planted_stream:
        visitors[category[e.item_id]][taste[e.user_id]] += 1
    for cat, tastes in visitors.items():
        assert tastes.most_common(1)[0][0] == cat, (cat, tastes.most_common(3))


def test_planted_tastes_users_rate_their_category_higher() -> None:
    category = {item.item_id: item.category for item in synthetic_catalogue(PLANTED)}
    taste = user_tastes(PLANTED)
    stars: dict[bool, list[float]] = {True: [], False: []}
    for e in synthetic_events(PLANTED, limit=40_000):
        if e.value is not None and "request_id" not in e.context:  # ratings (reward clicks carry 1.0)
            stars[category[e.item_id] == taste[e.user_id]].append(e.value)
    liked, other = (sum(v) / len(v) for v in (stars[True], stars[False]))
    assert len(stars[True]) > 100 and len(stars[False]) > 50
    assert liked - other > 0.6, (liked, other)  # TASTE_BONUS = 1 star, less after clipping at 5


def test_without_planted_tastes_categories_are_unrelated_to_users() -> None:
    plain = dataclasses.replace(PLANTED, taste=0.0)
    category = {item.item_id: item.category for item in synthetic_catalogue(plain)}
    taste = user_tastes(plain)
    events = [e for e in synthetic_events(plain, limit=20_000) if e.item_id is not None]
    share = sum(category[e.item_id] == taste[e.user_id] for e in events) / len(events)
    assert share < 0.25, share  # ~1/8 by chance


def test_taste_zero_keeps_the_stream_of_a_config_without_it() -> None:
    """Planted tastes draw from their own random streams: taste=0 is the stream as it was."""
    plain = dataclasses.replace(PLANTED, taste=0.0)
    planted = list(synthetic_events(PLANTED, limit=3_000))
    unplanted = list(synthetic_events(plain, limit=3_000))
    assert [e.event_time_ms for e in planted] == [e.event_time_ms for e in unplanted]
    assert [e.item_id for e in planted] != [e.item_id for e in unplanted]


def test_new_items_are_not_in_the_stream_and_cover_categories(planted_stream: list) -> None:
    items = list(synthetic_catalogue(PLANTED, new_items=16))
    new = items[PLANTED.n_items:]
    assert [i.item_id for i in new] == [f"i{k}" for k in range(1_000, 1_016)]
    assert {e.item_id for e in planted_stream}.isdisjoint(i.item_id for i in new)
    assert Counter(i.category for i in new) == {f"c{k}": 2 for k in range(8)}
    assert all(i.attributes["new"] == "true" for i in new)
    assert all(i.attributes["new"] == "false" for i in items[:1_000])


def test_unavailable_deterministic_and_encodable() -> None:
    items = list(synthetic_catalogue(PLANTED, unavailable=37))
    assert sum(not i.available for i in items) == 37
    assert items == list(synthetic_catalogue(PLANTED, unavailable=37))
    assert {i.attributes["price_band"] for i in items} == {"low", "mid", "high"}
    assert all(i.attributes["brand"].startswith(f"{i.category}-b") for i in items)
    assert all(i.updated_ms == PLANTED.start_time_ms for i in items)
    codec = ItemCodec()
    assert all(codec.decode(codec.encode(i)) == i for i in items[:200])
    with pytest.raises(ValueError, match="unavailable"):
        list(synthetic_catalogue(PLANTED, unavailable=1_001))


def test_open_catalogue_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown catalogue source 'kafka'"):
        open_catalogue("kafka:items")
    with pytest.raises(ValueError, match="needs a path"):
        open_catalogue("jsonl:")
    with pytest.raises(ValueError, match="synthetic catalogue only"):
        open_catalogue(f"jsonl:{tmp_path / 'x'}", new_items=3)
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        open_catalogue(f"obd:{tmp_path / 'nope.csv'}")
    with pytest.raises(ValueError, match="unknown synthetic option 'colour'"):
        open_catalogue("synthetic:colour=red")


def test_obd_item_context_ids_match_the_obd_events(shared_data: Path) -> None:
    folder = shared_data / "obd" / "random" / "men"
    items = list(read_obd_items(folder / "item_context.csv", now_ms=42))
    assert len(items) == 34 and len({i.item_id for i in items}) == 34
    assert {e.item_id for e in read_obd(folder / "men.csv")} <= {i.item_id for i in items}
    assert 2 <= len({i.category for i in items}) <= 10  # a categorical feature, not an id
    first = items[0]
    assert (first.item_id, first.category, first.available, first.updated_ms) == (
        "0", "ceca20033d7d36b74dc683ddfb804aa7", True, 42)
    assert set(first.attributes) == {"item_feature_0", "item_feature_2", "item_feature_3"}


def test_obd_bad_row_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "item_context.csv"
    path.write_text(f",item_id,item_feature_0,{OBD_CATEGORY}\n0,0,0.5,a\n1,one,0.2,b\n")
    with pytest.raises(ValueError, match=r"item_context.csv:3: invalid literal"):
        list(read_obd_items(path, now_ms=1))
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not an OBD item_context\.csv"):
        list(read_obd_items(path, now_ms=1))


def test_jsonl_items_and_a_bad_line_named(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text(
        '{"item_id": "sku-1", "category": "shoes", "available": false, "attributes": {"brand": "x", "size": 42},'
        ' "updated_ms": 1700000000000}\n'
        '{"item_id": "sku-2"}\n'
        '{"item_id": "sku-3", "availabel": false}\n'
    )
    items = read_item_jsonl(path, now_ms=7)
    one, two = next(items), next(items)
    assert (one.item_id, one.category, one.available, one.attributes, one.updated_ms) == (
        "sku-1", "shoes", False, {"brand": "x", "size": "42"}, 1_700_000_000_000)
    assert (two.category, two.available, two.attributes, two.updated_ms) == (None, True, {}, 7)
    with pytest.raises(ValueError, match=r"items.jsonl:3: unknown fields \['availabel'\]"):
        next(items)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "invalid literal"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"category": "a"}', "item_id must be a non-empty string"),
        ('{"item_id": 5}', "item_id must be a non-empty string"),
        ('{"item_id": "a", "updated_ms": "today"}', "updated_ms must be"),
        ('{"item_id": "a", "attributes": {"k": null}}', "attributes must be"),
    ],
)
def test_jsonl_bad_lines(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"item_id": "ok"}\n\n' + line + "\n")
    with pytest.raises(ValueError, match=rf"bad.jsonl:3: .*{message}"):
        list(read_item_jsonl(path, now_ms=1))


def test_cli_rejects_catalogue_options_for_events_and_two_sources() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["produce", "--new-items", "3"])
    assert result.exit_code == 2 and "--new-items and --unavailable need --topic items" in result.output
    result = runner.invoke(app, ["produce", "synthetic", "--source", "jsonl:x", "--topic", "items"])
    assert result.exit_code == 2 and "two sources given" in result.output
    result = runner.invoke(app, ["produce", "--topic", "items", "--source", "jsonl:/no/such.jsonl"])
    assert result.exit_code == 2 and "/no/such.jsonl" in result.output
