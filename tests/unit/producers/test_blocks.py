"""Block events from the producers (event schema version 2): synthetic share, JSON lines, CLI flags."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from producers.sources import open_source, parse_synthetic_overrides
from producers.sources.blocks import CATEGORY_SHARE, with_blocks
from producers.sources.jsonl import read_jsonl, write_jsonl
from producers.sources.synthetic import SyntheticConfig, synthetic_events
from pulse.cli import app
from schemas import Event, EventCodec, EventType

CONFIG = SyntheticConfig(seed=4, n_users=200, n_items=500, block_share=0.05)
N = 20_000


@pytest.fixture(scope="module")
def stream() -> list[Event]:
    return list(synthetic_events(CONFIG, limit=N))


def test_the_share_of_block_events_is_the_configured_one(stream: list[Event]) -> None:
    blocks = [e for e in stream if e.type is EventType.BLOCK]
    assert len(stream) == N  # blocks count towards the limit
    assert 0.04 < len(blocks) / N < 0.06
    by_category = sum(e.category is not None for e in blocks) / len(blocks)
    assert abs(by_category - CATEGORY_SHARE) < 0.06
    assert all((e.item_id is None) != (e.category is None) for e in blocks)


def test_a_block_follows_what_the_user_was_just_shown(stream: list[Event]) -> None:
    for before, block in itertools.pairwise(stream):
        if block.type is not EventType.BLOCK:
            continue
        assert before.type is not EventType.BLOCK and block.user_id == before.user_id
        assert block.event_time_ms == before.event_time_ms and block.event_id == f"{before.event_id}-block"
        blocked = block.item_id if block.category is None else block.category
        assert blocked == (before.item_id if block.category is None else before.context["category"])
        assert "category" not in block.context and "request_id" not in block.context


def test_other_events_are_the_stream_without_blocks(stream: list[Event]) -> None:
    plain = list(synthetic_events(parse_synthetic_overrides("users=200,items=500", seed=4), limit=N))
    rest = [e for e in stream if e.type is not EventType.BLOCK]
    assert rest == plain[: len(rest)]
    assert all(a.event_time_ms <= b.event_time_ms for a, b in itertools.pairwise(stream))
    assert len({e.event_id for e in stream}) == N


def test_every_block_passes_the_codec_as_version_2(stream: list[Event]) -> None:
    codec = EventCodec(clock_ms=lambda: 2_000_000_000_000)
    blocks = [e for e in stream if e.type is EventType.BLOCK]
    assert [codec.decode(codec.encode(e)) for e in blocks] == blocks


def test_no_blocks_by_default_and_the_same_seed_gives_the_same_blocks(stream: list[Event]) -> None:
    spec = "synthetic:users=200,items=500"
    assert not any(e.type is EventType.BLOCK for e in open_source(spec, seed=4, limit=5_000))
    again = list(open_source(f"{spec},blocks=0.05", seed=4, limit=N))
    assert again == stream
    assert list(open_source(spec, seed=4, limit=N, block_share=0.05)) == stream  # the flag's way in


def test_a_block_share_is_checked() -> None:
    with pytest.raises(ValueError, match="block_share must be in"):
        SyntheticConfig(block_share=0.7)
    with pytest.raises(ValueError, match="block share must be in"):
        list(with_blocks([], share=-0.1, seed=1))
    with pytest.raises(ValueError, match="synthetic source only"):
        open_source("jsonl:/no/such.jsonl", block_share=0.1)


def test_jsonl_reads_and_writes_block_events(tmp_path: Path) -> None:
    path = tmp_path / "blocks.jsonl"
    lines = [
        {"event_id": "b1", "type": "block", "user_id": "u1", "item_id": "i9", "event_time_ms": 1_700_000_000_000},
        {"event_id": "b2", "type": "block", "user_id": "u1", "category": "shoes", "event_time_ms": 1_700_000_000_001},
    ]
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    events = list(read_jsonl(path))
    assert events == [
        Event("b1", EventType.BLOCK, "u1", 1_700_000_000_000, item_id="i9"),
        Event("b2", EventType.BLOCK, "u1", 1_700_000_000_001, category="shoes"),
    ]
    assert write_jsonl(tmp_path / "again.jsonl", events) == 2 and list(read_jsonl(tmp_path / "again.jsonl")) == events


def test_jsonl_refuses_a_category_that_is_not_a_string(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"event_id": "b", "type": "block", "user_id": "u", "category": 3, "event_time_ms": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: category must be a string or null, got 3"):
        list(read_jsonl(path))


def test_produce_flags_are_checked_before_kafka() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["produce", "--block-share", "0.1", "--event-schema", "1"])
    assert result.exit_code == 2 and "--block-share needs --event-schema 2" in result.output
    result = runner.invoke(app, ["produce", "--topic", "items", "--block-share", "0.1"])
    assert result.exit_code == 2 and "--block-share is for events" in result.output
    result = runner.invoke(app, ["produce", "jsonl:/no/such.jsonl", "--block-share", "0.1"])
    assert result.exit_code == 2 and "synthetic source only" in result.output
    result = runner.invoke(app, ["produce", "--event-schema", "3"])
    assert result.exit_code == 2 and "event-schema" in result.output
