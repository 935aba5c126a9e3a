"""``pulse experiments``: the experiments serving runs (``PULSE_EXPERIMENTS``) and which variant a user gets."""

from __future__ import annotations

from typing import Annotated

import typer

from config import Settings
from config.experiments import Experiment
from pulse.app import app, print_json, settings_of
from serving.decisions import DecisionPolicy

experiments_app = typer.Typer(help="Experiments serving runs (PULSE_EXPERIMENTS): list them, assign users.",
                              no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")


def _running(settings: Settings) -> list[Experiment]:
    """The configured experiments, and the control-share split decisions run when none is on decisions."""
    running = list(settings.experiments)
    if not any(e.surface == "decisions" for e in running):
        running.append(DecisionPolicy(bandit_policy=settings.bandit_policy, experiment=settings.serving_experiment_name,
                                      salt=settings.serving_experiment_salt,
                                      control_share=settings.serving_control_share).experiment_definition())
    return running


@experiments_app.command("list")
def list_experiments(
    ctx: typer.Context,
    user: Annotated[list[str], typer.Option("--user", "-u", help="Show this user's variant (repeatable)")] = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Each experiment with its surface, salt and variants; with --user, the variant each user is served.

    The assignment is the one every serving worker makes (a hash of salt and user id), so this
    answers "which variant does user X see" without asking serving. Results are not here yet.
    """
    settings = settings_of(ctx)
    rows = []
    for experiment in _running(settings):
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
