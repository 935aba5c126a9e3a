"""``pulse job run|submit|list|savepoint|cancel``: the Flink job, embedded or on a cluster.

``run`` executes it on an embedded MiniCluster (the default, ``make demo``); ``submit`` sends it
to a standalone cluster (``pulse up --flink`` starts one locally), whose jobs ``list``,
``savepoint`` (optionally stopping the job) and ``cancel`` manage through the REST API.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from config import Settings
from infra.local.jars import ensure_jars
from infra.local.process import ServiceError
from producers.topics import ensure_topics
from pulse.app import app, fail, print_json, settings_of
from pulse.flink_rest import FlinkRest, FlinkRestError
from pulse.reach import require

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
    from flink_jobs.launch import JobFailedError, prepare_flink_log_dir
    from flink_jobs.launch import run as run_job

    settings = _with_parallelism(settings_of(ctx), parallelism)
    restore_from = _restore_point(settings, restore)
    require(settings, kafka=True, redis=True)  # before Flink starts: one line, not a JVM stack trace
    ensure_topics(settings)
    if restore_from:
        typer.echo(f"restoring from {restore_from}", err=True)
    _prune(settings, restore_from)
    say_stopped_on_sigterm()
    try:
        run_job(settings, jars=_job_jars(settings), restore_from=restore_from, bounded=bounded)
    except JobFailedError as exc:
        raise fail(f"{exc}\n  the whole trace is in Flink's log under {prepare_flink_log_dir(settings)}") from None
    except KeyboardInterrupt:
        typer.echo(f"stopped; {RESUMES}", err=True)
        raise typer.Exit(130) from None


#: What a stopped job's line ends with (Ctrl-C, SIGTERM): its state is in its checkpoints.
RESUMES = "`pulse job run` resumes from the newest checkpoint"
STOPPED_BY_SIGTERM = f"stopped by SIGTERM; {RESUMES}"


def say_stopped_on_sigterm() -> None:
    """On SIGTERM (``kill``, systemd's stop) print one line, then die of it as before.

    The default action follows the line, so the exit status still says SIGTERM (a service manager
    counts that a clean stop; an exit code of 143 it would not). A handler someone else set stays.
    """
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def stopped(signum: int, _frame: FrameType | None) -> None:
        typer.echo(STOPPED_BY_SIGTERM, err=True)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stopped)


def _prune(settings: Settings, restore_from: Path | None) -> None:
    """The checkpoints of earlier runs beyond ``PULSE_CHECKPOINT_RUNS_KEPT`` go, with one line saying so."""
    from flink_jobs.launch import prune_checkpoint_runs

    pruned, freed = prune_checkpoint_runs(settings, restore_from)
    if pruned:
        typer.echo(f"deleted the checkpoints of {len(pruned)} earlier runs ({freed / 1e6:.1f} MB; "
                   f"PULSE_CHECKPOINT_RUNS_KEPT={settings.checkpoint_runs_kept})", err=True)


JobManager = Annotated[
    str | None,
    typer.Option(help="REST host:port of the cluster's JobManager [default: 127.0.0.1:PULSE_FLINK_REST_PORT]"),
]
JobId = Annotated[str | None, typer.Option(help="Job id [default: the one running job named PULSE_JOB_NAME]")]


@job_app.command("submit")
def submit(
    ctx: typer.Context,
    jobmanager: JobManager = None,
    parallelism: Annotated[int | None, typer.Option(help="Operator parallelism [env: PULSE_JOB_PARALLELISM]")] = None,
    restore: Annotated[
        str, typer.Option(help="'none', 'latest' (newest retained checkpoint) or a savepoint/checkpoint path")
    ] = "none",
) -> None:
    """Submit the job to a standalone Flink cluster (detached); prints its job id."""
    from flink_jobs.launch import submit as submit_job

    settings = _with_parallelism(settings_of(ctx), parallelism)
    address = _jobmanager(settings, jobmanager)
    restore_from = _restore_point(settings, restore)
    require(settings, kafka=True, redis=True)
    try:
        FlinkRest(address).jobs()  # a clear error now rather than a JVM stack trace later
    except FlinkRestError as exc:
        raise fail(f"{exc} (start a local cluster with `pulse up --flink`)") from None
    ensure_topics(settings)
    _prune(settings, restore_from)
    job_id = submit_job(settings, address, jars=_job_jars(settings), restore_from=restore_from)
    typer.echo(job_id)


@job_app.command("list")
def list_jobs(
    ctx: typer.Context,
    jobmanager: JobManager = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Jobs on the cluster, newest first."""
    try:
        jobs = FlinkRest(_jobmanager(settings_of(ctx), jobmanager)).jobs()
    except FlinkRestError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json([vars(j) for j in jobs])
        return
    for j in jobs:
        typer.echo(f"{j.job_id}  {j.state:<10} {j.duration_s:>9.0f}s  {j.name}")


@job_app.command("savepoint")
def savepoint(
    ctx: typer.Context,
    jobmanager: JobManager = None,
    job_id: JobId = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the job once the savepoint is taken")] = False,
    target: Annotated[Path | None, typer.Option(help="Folder [default: <home>/savepoints]")] = None,
) -> None:
    """Take a savepoint (optionally stopping the job); prints its path, for `submit --restore`."""
    settings = settings_of(ctx)
    rest = FlinkRest(_jobmanager(settings, jobmanager))
    try:
        job = job_id or rest.running_job(settings.job_name)
        path = rest.savepoint(job, (target or settings.savepoint_path()).resolve(), stop=stop)
    except FlinkRestError as exc:
        raise fail(str(exc)) from None
    typer.echo(str(path))


@job_app.command("cancel")
def cancel(ctx: typer.Context, jobmanager: JobManager = None, job_id: JobId = None) -> None:
    """Cancel the job (its latest checkpoint is retained for `--restore latest`)."""
    settings = settings_of(ctx)
    rest = FlinkRest(_jobmanager(settings, jobmanager))
    try:
        job = job_id or rest.running_job(settings.job_name)
        rest.cancel(job)
        rest.wait_state(job, {"CANCELED"})
    except FlinkRestError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"cancelled {job}")


def _with_parallelism(settings: Settings, parallelism: int | None) -> Settings:
    """The job's settings; one clear line for an execution mode the job cannot run in."""
    if settings.python_execution_mode != "thread":
        raise fail("the job runs in thread mode only (batched stages, docs/adr/0007): "
                   "unset PULSE_PYTHON_EXECUTION_MODE or set it to 'thread'")
    return settings if parallelism is None else settings.model_copy(update={"job_parallelism": parallelism})


def _job_jars(settings: Settings) -> list[Path]:
    """The job's jars, resolved with Maven once per change; also rebuilds its Java classes after a change."""
    try:
        return ensure_jars(settings.home, "flink")
    except ServiceError as exc:
        raise fail(str(exc)) from None


def _jobmanager(settings: Settings, given: str | None) -> str:
    return given or f"127.0.0.1:{settings.flink_rest_port}"


def _restore_point(settings: Settings, restore: str) -> Path | None:
    """'latest' → newest retained checkpoint (or None), 'none' → None, else a path with _metadata."""
    from flink_jobs.launch import restore_latest

    if restore == "latest":
        path, warning = restore_latest(settings)
        if warning:
            typer.echo(f"warning: {warning}", err=True)
        return path
    if restore == "none":
        return None
    path = Path(restore).resolve()
    if not (path / "_metadata").exists():
        raise fail(f"{path} is not a checkpoint or savepoint (no _metadata)")
    return path
