"""The demo's counters: this run's counts beside the model's lifetime, and both rates."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from typer.testing import CliRunner

from pulse.cli import app
from pulse.demo_view import DemoCounters, summary


def rendered(counters: DemoCounters) -> str:
    console = Console(record=True, width=200)
    console.print(summary(counters, None))
    return console.export_text()


def test_a_second_run_labels_this_run_and_the_lifetime_apart() -> None:
    # The second run: the model had learned 76,915 events before this run started.
    counters = DemoCounters(learned_at_start=76_915)
    counters.update(0.0, produced=0, learned=76_915, learnable=0)
    counters.update(74.0, produced=74_000, learned=150_915, learnable=74_000)
    text = rendered(counters)
    assert "events produced, this run" in text and "74,000" in text
    assert "events learned by the job, this run" in text and "74,000" in text
    assert "events learned by the model, lifetime" in text and "150,915" in text
    assert "produced 1,000/s (1,000/s learnable) · learned 1,000/s" in text


def test_learned_per_second_shows_a_job_that_falls_behind() -> None:
    counters = DemoCounters(learned_at_start=0)
    for second in range(0, 11, 2):
        counters.update(float(second), produced=1000 * second, learned=400 * second, learnable=900 * second)
    assert (counters.produced_rate.rate, counters.learned_rate.rate) == (1000.0, 400.0)
    assert "produced 1,000/s (900/s learnable) · learned 400/s" in rendered(counters)


def test_a_restore_that_rewinds_the_lifetime_count_never_shows_a_negative_run() -> None:
    counters = DemoCounters(learned_at_start=5_000)
    counters.update(0.0, produced=100, learned=4_200)
    assert counters.learned_this_run == 0


def test_a_trace_file_that_cannot_be_written_stops_the_demo_before_anything_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--trace", str(tmp_path / "missing" / "looks.csv")])
    assert result.exit_code == 1
    assert "cannot write the trace file" in result.output and "No such file or directory" in result.output
    assert not (tmp_path / "missing").exists()
