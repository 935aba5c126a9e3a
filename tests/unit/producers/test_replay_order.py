"""File sources replay in event-time order by default (issue 22.1), and `pulse eval` sees that order."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from producers.sources import ReplayOrder, open_source
from producers.sources.ordering import time_ordered
from pulse.cli import app
from schemas.events import Event, EventType

# (user, item, stars, unix seconds): time order with a tie at 100 (file order u3 before u4 after shuffling).
SORTED = [("u1", "i1", 4, 90), ("u2", "i2", 3, 95), ("u3", "i1", 5, 100), ("u4", "i3", 2, 100), ("u5", "i2", 1, 120)]


def _shuffled_udata(path: Path, rows: list[tuple[str, str, int, int]], seed: int) -> list[tuple[str, str, int, int]]:
    shuffled = rows[:]
    random.Random(seed).shuffle(shuffled)
    path.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in shuffled))
    return shuffled


def test_movielens_replays_by_event_time_ties_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    shuffled = _shuffled_udata(path, SORTED, seed=4)
    assert [t for *_, t in shuffled] != sorted(t for *_, t in shuffled)  # really out of order
    times = [e.event_time_ms for e in open_source(f"movielens:{path}")]
    assert times == sorted(times)
    tied = [e.user_id for e in open_source(f"movielens:{path}") if e.event_time_ms == 100_000]
    assert tied == [u for u, _, _, t in shuffled if t == 100]
    file_order = [e.user_id for e in open_source(f"movielens:{path}", order=ReplayOrder.FILE)]
    assert file_order == [u for u, *_ in shuffled]


def test_limit_keeps_the_earliest_events(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    _shuffled_udata(path, SORTED, seed=1)
    assert [e.user_id for e in open_source(f"movielens:{path}", limit=2)] == ["u1", "u2"]


def test_jsonl_and_obd_replay_by_event_time(tmp_path: Path) -> None:
    js = tmp_path / "events.jsonl"
    js.write_text(
        '{"session": 1, "events": [{"aid": 1, "ts": 3000, "type": "clicks"}]}\n'
        '{"session": 2, "events": [{"aid": 2, "ts": 1000, "type": "clicks"}, '
        '{"aid": 3, "ts": 5000, "type": "carts"}]}\n'
        '{"event_id": "e9", "type": "view", "user_id": "u9", "item_id": "i9", "event_time_ms": 2000}\n'
    )
    assert [e.event_id for e in open_source(f"jsonl:{js}")] == ["otto-2-0", "e9", "otto-1-0", "otto-2-1"]
    folder = tmp_path / "random" / "men"
    folder.mkdir(parents=True)
    csv = folder / "men.csv"
    features = ",".join(f"user_feature_{k}" for k in range(4))
    header = f",timestamp,item_id,position,click,propensity_score,{features}\n"
    csv.write_text(
        header
        + "1,2019-11-24 00:05:00+00:00,14,3,1,0.03,a,b,c,d\n"
        + "2,2019-11-24 00:01:00+00:00,15,1,0,0.03,e,f,g,h\n"
    )
    ids = [e.event_id for e in open_source(f"obd:{csv}")]
    assert ids == ["obd-men-random-2-imp", "obd-men-random-1-imp", "obd-men-random-1-click"]


def test_spilled_sort_equals_in_memory_sort() -> None:
    rng = random.Random(7)
    events = [Event(f"e{i}", EventType.VIEW, "u", rng.randrange(50)) for i in range(1_000)]
    in_memory = list(time_ordered(events))
    assert [e.event_id for e in time_ordered(events, chunk_size=64)] == [e.event_id for e in in_memory]
    assert [e.event_time_ms for e in in_memory] == sorted(e.event_time_ms for e in events)


def test_produce_and_eval_have_an_order_option() -> None:
    runner = CliRunner()
    for command in (["produce", "--help"], ["eval", "mf", "--help"], ["eval", "bandit", "--help"]):
        result = runner.invoke(app, command, terminal_width=200)
        assert result.exit_code == 0
        assert "--order" in result.output


@pytest.mark.parametrize("order", ["time", "file"])
def test_eval_mf_order_matches_the_replay_order(tmp_path: Path, order: str) -> None:
    """`pulse eval mf` on a shuffled file equals eval on the file written in the replayed order."""
    rows = [(f"u{k % 7}", f"i{k % 11}", 1 + k % 5, 1_000 + (k * 37) % 101) for k in range(300)]
    shuffled = tmp_path / "shuffled.data"
    _shuffled_udata(shuffled, rows, seed=3)
    replayed = tmp_path / "replayed.data"
    replayed.write_text("".join(
        f"{e.user_id}\t{e.item_id}\t{e.value:g}\t{e.event_time_ms // 1000}\n"
        for e in open_source(f"movielens:{shuffled}", order=ReplayOrder(order))
    ))

    def rmse(path: Path, *options: str) -> float:
        args = ["eval", "mf", "--data", f"movielens:{path}", "--json", "--no-compare", "--no-progress"]
        args += ["--repeats", "1"]
        result = CliRunner().invoke(app, [*args, *options])
        assert result.exit_code == 0, result.output
        return float(json.loads(result.output)["pulse"]["rmse"])

    assert rmse(shuffled, "--order", order) == rmse(replayed, "--order", "file")
