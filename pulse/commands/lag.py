"""``pulse lag``: how far behind the job is (consumer lag, score freshness, dead letters); a probe.

Exit codes: 0 healthy (or no threshold given), 1 a ``--max-*`` threshold is exceeded, 2 Kafka or
Redis could not be read. Definitions: ``pulse/lag/`` and README "Operating Pulse".
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from pulse.app import app, fail, print_json, settings_of
from pulse.lag import LagProbe, LagReport, Thresholds, breaches
from pulse.reach import require

EXIT_BREACH = 1
EXIT_UNREADABLE = 2


def _table(report: LagReport, problems: list[str]) -> Group:
    table = Table(title=f"{report.topic} <- group {report.group}")
    for column in ("partition", "committed", "high watermark", "lag (msgs)", "lag (s)"):
        table.add_column(column, justify="right")
    for p in report.partitions:
        committed = "-" if p.committed is None else f"{p.committed:,}"
        table.add_row(str(p.partition), committed, f"{p.high:,}", f"{p.lag_messages:,}", f"{p.lag_seconds:,.1f}")
    table.add_row("[bold]total[/]", "", f"{sum(p.high for p in report.partitions):,}",
                  f"[bold]{report.lag_messages:,}[/]", f"[bold]{report.lag_seconds:,.1f}[/] (max)")
    f, d = report.freshness, report.dead_letters
    fresh = (
        f"score freshness: newest {f.newest_age_ms:,} ms, median {f.median_age_ms:,} ms, oldest {f.oldest_age_ms:,} ms"
        f" ({f.sampled} keys sampled)"
        if f.sampled else "score freshness: no per-user scores in Redis"
    )
    dlq = f"dead letters on {report.dlq_topic}: {d.total:,} total, {d.recent:,} in the last {d.window_s:g} s"
    status = "[red]" + "; ".join(problems) + "[/]" if problems else "[green]ok[/]"
    return Group(table, fresh, dlq, status)


def _document(report: LagReport, limits: Thresholds, problems: list[str]) -> dict[str, object]:
    return {
        **report.to_json(),
        "thresholds": {
            "max_lag_seconds": limits.max_lag_seconds,
            "max_lag_messages": limits.max_lag_messages,
            "max_freshness_ms": limits.max_freshness_ms,
        },
        "breaches": problems,
        "ok": not problems,
    }


@app.command()
def lag(
    ctx: typer.Context,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C (exit code: the last refresh)")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout (one document per refresh)")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="--watch refresh interval, seconds")] = 2.0,
    max_lag_seconds: Annotated[
        float | None, typer.Option(min=0, help="Exit 1 when the event-time lag exceeds this")
    ] = None,
    max_lag_messages: Annotated[
        int | None, typer.Option(min=0, help="Exit 1 when the total lag in records exceeds this")
    ] = None,
    max_freshness_ms: Annotated[
        int | None, typer.Option(min=0, help="Exit 1 when the freshest sampled score is older than this")
    ] = None,
) -> None:
    """Per-partition lag of the job's consumer group, score freshness and dead letters; a health probe."""
    settings = settings_of(ctx)
    limits = Thresholds(max_lag_seconds, max_lag_messages, max_freshness_ms)
    problems: list[str] = []
    require(settings, kafka=True, redis=True, code=EXIT_UNREADABLE)
    try:
        with LagProbe(settings) as probe:
            if not watch:
                report = probe.measure()
                problems = breaches(report, limits)
                if json:
                    print_json(_document(report, limits, problems))
                else:
                    Console().print(_table(report, problems))
            else:
                problems = _watch(probe, limits, json, interval)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - any Kafka/Redis client failure: one line, its own exit code
        raise fail(f"could not measure lag: {exc}", code=EXIT_UNREADABLE) from None
    if problems:
        raise typer.Exit(EXIT_BREACH)


def _watch(probe: LagProbe, limits: Thresholds, json: bool, interval: float) -> list[str]:
    problems: list[str] = []
    if json:
        try:
            while True:
                started = time.monotonic()
                report = probe.measure()
                problems = breaches(report, limits)
                print_json(_document(report, limits, problems))
                time.sleep(max(interval - (time.monotonic() - started), 0.0))
        except KeyboardInterrupt:
            return problems
    with Live(refresh_per_second=4) as live:
        try:
            while True:
                started = time.monotonic()
                report = probe.measure()
                problems = breaches(report, limits)
                live.update(_table(report, problems))
                time.sleep(max(interval - (time.monotonic() - started), 0.0))
        except KeyboardInterrupt:
            return problems
