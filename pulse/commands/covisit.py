"""``pulse covisit SOURCE``: co-visitation lists ("also viewed") learned from an event source; ``--write`` serves them.

Learns :class:`~online_models.covisit.CoVisitation` from the events of SOURCE (a user's events
are one session; OTTO jsonl sessions are ``otto-<session>``), prints the lists of the most
visited items with their weighted counts and, with ``--write``, stores every item's list under
``RedisKeys.covisit`` for ``GET /v1/items/{id}/similar?method=covisit`` (``serving/covisit.py``).
"""

from __future__ import annotations

from collections import Counter
from typing import Annotated

import typer

from online_models.covisit import VISIT_WEIGHTS, CoVisitation
from producers.sources import SOURCE_HELP, open_source
from pulse.app import app, fail, print_json, settings_of
from pulse.reach import require
from schemas.redis_keys import RedisKeys

#: The model version the written lists carry.
MODEL_VERSION = "covisit-v1"


def learn(spec: str, window_ms: int, limit: int | None) -> tuple[CoVisitation, Counter[str], int]:
    """Co-visitation of the source's visits (views, clicks, carts, purchases), their counts by item, the last time."""
    covisit, visits, last_ms = CoVisitation(window_ms=window_ms, gap_half_life_ms=3_600_000), Counter[str](), 0
    for event in open_source(spec, limit=limit):
        weight = VISIT_WEIGHTS.get(event.type)
        if event.item_id is None or weight is None:
            continue
        covisit.learn_one(event.user_id, event.item_id, event.event_time_ms, weight)
        visits[event.item_id] += 1
        last_ms = max(last_ms, event.event_time_ms)
    return covisit, visits, last_ms


@app.command("covisit")
def covisit_cmd(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    show: Annotated[int, typer.Option(help="Print the lists of this many most visited items")] = 3,
    k: Annotated[int, typer.Option(help="Partners printed per item")] = 10,
    keep: Annotated[int, typer.Option(help="Partners written per item (--write)")] = 50,
    window_h: Annotated[float, typer.Option(help="Two visits of a session pair within this many hours")] = 24.0,
    limit: Annotated[int | None, typer.Option(help="Read at most this many events")] = None,
    write: Annotated[bool, typer.Option(help="Store every item's list in Redis (similar items, method=covisit)")] = (
        False),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Learn co-visitation from SOURCE; print the most visited items' lists; --write serves them."""
    settings = settings_of(ctx)
    try:
        covisit, visits, last_ms = learn(source, int(window_h * 3_600_000), limit)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc), code=2) from None
    shown = {item: covisit.similar(item, k) for item, _ in sorted(visits.items(), key=lambda p: (-p[1], p[0]))[:show]}
    written = 0
    if write:
        require(settings, redis=True)
        keys = RedisKeys(settings.redis_prefix)
        lists = [(keys.covisit(item), last_ms, {"items": [[o, n] for o, n in covisit.similar(item, keep)],
                                                "window_ms": covisit.window_ms}) for item in covisit.items()]
        import redis as redis_lib  # here: the writer and its client (numpy, ~0.15 s) only for --write

        from flink_jobs.redis_writer import RedisWriter

        options = settings.redis_client_kwargs()
        with RedisWriter(keys, MODEL_VERSION,
                         client_factory=lambda: redis_lib.Redis.from_url(settings.redis_url, **options)) as writer:
            for start in range(0, len(lists), 1_000):
                writer.write_batch(lists[start:start + 1_000])
        written = len(lists)
    if as_json:
        print_json({"items": len(visits), "pairs": covisit.n_pairs, "written": written,
                    "lists": {item: [[o, n] for o, n in found] for item, found in shown.items()}})
        return
    typer.echo(f"{sum(visits.values())} visits of {len(visits)} items; {covisit.n_pairs} co-visited pairs")
    for item, found in shown.items():
        typer.echo(f"item {item} ({visits[item]} visits) also visited: "
                   + ", ".join(f"{other} ({count:.2f})" for other, count in found))
    if write:
        typer.echo(f"wrote {written} lists under {settings.redis_prefix}:covisit:* "
                   "(GET /v1/items/{id}/similar?method=covisit)")
