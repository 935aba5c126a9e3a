"""``pulse experiments``: the experiments serving runs (``PULSE_EXPERIMENTS``), who gets which variant, the results."""

from __future__ import annotations

from typing import Annotated

import redis as redis_lib
import typer

from online_models.ab_results import OUTCOMES
from pulse.app import app, fail, print_json, settings_of
from pulse.experiment_results import build_report, read_results, render, running_experiments
from pulse.reach import require
from schemas.redis_keys import RedisKeys

experiments_app = typer.Typer(help="Experiments serving runs (PULSE_EXPERIMENTS): list them, assign users, "
                              "report results.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")


@experiments_app.command("list")
def list_experiments(
    ctx: typer.Context,
    user: Annotated[list[str], typer.Option("--user", "-u", help="Show this user's variant (repeatable)")] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Each experiment with its surface, salt and variants; with --user, the variant each user is served.

    The assignment is the one every serving worker makes (a hash of salt and user id), so this
    answers "which variant does user X see" without asking serving. Results: ``pulse experiments report``.
    """
    settings = settings_of(ctx)
    rows = []
    for experiment in running_experiments(settings):
        assigned = {u: (v.name if (v := experiment.assign(u)) is not None else None) for u in user}
        rows.append({**experiment.model_dump(mode="json"), "salt": experiment.hash_salt, "users": assigned})
    if as_json:
        print_json(rows)
        return
    for row in rows:
        variants = ", ".join(f"{v['name']}={v['policy']} {v['share']:.0%}" for v in row["variants"])
        outside = 1.0 - sum(v["share"] for v in row["variants"])
        rest = f", outside {outside:.0%}" if outside > 1e-9 else ""
        typer.echo(f"{row['name']} ({row['surface']}, salt {row['salt']!r}): {variants}{rest}")
        for name, variant in row["users"].items():
            typer.echo(f"  {name}: {variant if variant is not None else 'outside the experiment'}")


@experiments_app.command("report")
def report(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The experiment (as named in PULSE_EXPERIMENTS)")],
    outcome: Annotated[str, typer.Option(help="What counts as a success of a served list: "
                                              + " | ".join(OUTCOMES))] = "clicked",
    control: Annotated[str | None, typer.Option(help="The variant the others are compared with "
                                                     "(default: the experiment's first)")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per variant: exposures, CTR and conversion with 95% intervals, the lift against control and its p-value.

    Reads the counts the job's attribution writes to <live prefix>:experiment:NAME. Exit 2 for an
    unknown experiment, outcome or control (or Redis unreachable), 1 while there are no results yet.
    """
    settings = settings_of(ctx)
    experiments = {e.name: e for e in running_experiments(settings)}
    experiment = experiments.get(name)
    if experiment is None:
        raise fail(f"no experiment {name!r} in PULSE_EXPERIMENTS (defined: {', '.join(experiments) or 'none'})", 2)
    if outcome not in OUTCOMES:
        raise fail(f"--outcome {outcome!r}: one of {', '.join(OUTCOMES)}", 2)
    variants = [v.name for v in experiment.variants]
    control = variants[0] if control is None else control
    if control not in variants:
        raise fail(f"--control {control!r} is not a variant of {name!r} ({', '.join(variants)})", 2)
    require(settings, redis=True, code=2)
    client = redis_lib.Redis.from_url(settings.redis_url, **settings.redis_client_kwargs())
    try:
        stored = read_results(client, RedisKeys(settings.redis_prefix), name)
    except ValueError as exc:
        raise fail(str(exc)) from None
    finally:
        client.close()
    if stored.counts is None:
        raise fail(f"no results for {name!r} yet: {stored.key} does not exist; the job writes it once served lists "
                   "of the experiment and events attributed to them have arrived (is the job running, with this "
                   "PULSE_EXPERIMENTS?)")
    data = build_report(experiment, stored, outcome, control)
    if as_json:
        print_json(data)
    else:
        for line in render(data):
            typer.echo(line)
