"""``pulse model``: which model serving answers with — show, promote a prefix, roll back (``pulse/model_alias.py``).

Also ``index-items``: the set of learned items, for a Redis a job wrote before it (ADR 0003).
"""

from __future__ import annotations

import sys
from typing import Annotated

import redis as redis_lib
import typer
from tqdm import tqdm

from config import Settings
from pulse.app import app, fail, print_json, settings_of
from pulse.model_alias import AliasError, Switch, live_prefix, promote, rollback
from pulse.reach import require
from schemas.redis_keys import RedisKeys, item_id_of_key

model_app = typer.Typer(help="Which Redis prefix (model) serving answers with: promote, roll back.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


def _client(settings: Settings) -> redis_lib.Redis:
    require(settings, redis=True)
    return redis_lib.Redis.from_url(settings.redis_url, **settings.redis_client_kwargs())


def _report(switch: Switch, action: str, as_json: bool) -> None:
    if as_json:
        print_json({"action": action, "before": switch.before, "after": switch.after, "changed": switch.changed})
    elif switch.changed:
        typer.echo(f"{action}: serving reads {switch.after!r} (was {switch.before!r}); "
                   "every worker switches within PULSE_SERVING_ALIAS_REFRESH_S")
    else:
        typer.echo(f"{action}: {switch.after!r} is live already; nothing changed")


@model_app.command("live")
def show(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The prefix serving reads now, and the ones before it."""
    settings = settings_of(ctx)
    client, home = _client(settings), RedisKeys(settings.redis_prefix)
    history = [value.decode() for value in client.lrange(home.live("history"), 0, -1)]  # type: ignore[union-attr]
    live = live_prefix(client, home)
    if as_json:
        print_json({"live": live, "history": history})
    else:
        typer.echo(f"live: {live}" + (f" (before: {', '.join(history)})" if history else ""))


@model_app.command("promote")
def promote_cmd(
    ctx: typer.Context,
    prefix: Annotated[str, typer.Argument(help="The Redis prefix a job wrote the new model to")],
    force: Annotated[bool, typer.Option(help="Promote even if no job has written model metadata there")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Make PREFIX live for every serving worker (atomic; logged to <prefix>:{live}:log)."""
    settings = settings_of(ctx)
    try:
        switch = promote(_client(settings), RedisKeys(settings.redis_prefix), prefix, force=force)
    except (AliasError, ValueError) as exc:
        raise fail(str(exc)) from None
    _report(switch, "promote", as_json)


@model_app.command("rollback")
def rollback_cmd(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Make the prefix that was live before the last promote live again."""
    settings = settings_of(ctx)
    try:
        switch = rollback(_client(settings), RedisKeys(settings.redis_prefix))
    except AliasError as exc:
        raise fail(str(exc)) from None
    _report(switch, "rollback", as_json)


@model_app.command("index-items", help=(
    "List every item with factors under PREFIX in the set serving reads items by (one SCAN of the keyspace). "
    "Once, for a Redis a job wrote before that set: the job adds the items it writes, not the ones written before."))
def index_items_cmd(  # noqa: D103 -- its help is the decorator's
    ctx: typer.Context,
    prefix: Annotated[str | None, typer.Argument(help="The Redis prefix (default: PULSE_REDIS_PREFIX)")] = None,
    progress: Annotated[bool, typer.Option(help="A progress bar on stderr")] = True,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    settings = settings_of(ctx)
    client, keys = _client(settings), RedisKeys(prefix or settings.redis_prefix)
    learned, listed, added, cursor = keys.learned_items(), 0, 0, None
    with tqdm(unit="item", desc="items", file=sys.stderr, disable=None if progress else True) as bar:
        while cursor != 0:
            cursor, page = client.scan(cursor or 0, match=f"{keys.prefix}:item:{{*", count=1000)  # type: ignore[misc]
            items = sorted({found[0] for found in (item_id_of_key(name.decode(), keys.prefix) for name in page)
                            if found is not None})
            if items:
                added += int(client.sadd(learned, *items))  # type: ignore[arg-type]
                listed += len(items)
                bar.update(len(items))
    if as_json:
        print_json({"set": learned, "items": listed, "added": added})
    else:
        typer.echo(f"index-items: {listed:,} items under {keys.prefix!r} listed in {learned} ({added:,} added)")
