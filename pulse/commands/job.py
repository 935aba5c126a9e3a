"""``pulse job run``: the Flink job on the embedded MiniCluster (the default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from producers.topics import ensure_topics
from pulse.cli import app, fail, settings_of

job_app = typer.Typer(help="The PyFlink job: Kafka -> per-user state + learners -> Redis.", no_args_is_help=True)
app.add_typer(job_app, name="job")


@job_app.command("run")
def run(
    ctx: typer.Context,
    parallelism: Annotated[int | None, typer.Option(help="Operator parallelism [env: PULSE_JOB_PARALLELISM]")] = None,
    restore: Annotated[
        str, typer.Option(help="'latest' (newest retained checkpoint, if any), 'none', or a checkpoint path")
    ] = "latest",
    bounded: Annotated[
        bool, typer.Option(help="Stop at the offsets that are latest at start (backfills, tests)")
    ] = False,
) -> None:
    """Run the job on a local MiniCluster; resumes from the latest checkpoint unless told not to."""
    from flink_jobs.pipeline import latest_checkpoint
    from flink_jobs.pipeline import run as run_job

    settings = settings_of(ctx)
    if parallelism is not None:
        settings = settings.model_copy(update={"job_parallelism": parallelism})
    if restore == "latest":
        restore_from = latest_checkpoint(settings.checkpoint_path())
    elif restore == "none":
        restore_from = None
    else:
        restore_from = Path(restore)
        if not (restore_from / "_metadata").exists():
            raise fail(f"{restore_from} is not a checkpoint or savepoint (no _metadata)")
    ensure_topics(settings)
    if restore_from:
        typer.echo(f"restoring from {restore_from}", err=True)
    run_job(settings, restore_from=restore_from, bounded=bounded)
