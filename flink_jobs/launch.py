"""Launching the job: the environment the settings describe, run here or submitted to a cluster.

Kept apart from ``pipeline.py`` (the graph only), so the graph can be built on any environment.
The caller hands in the jars: ``pulse job run|submit`` resolve them with ``infra.local.jars``
(which also rebuilds the job's Java classes after a change); the job itself never imports infra.
``python -m flink_jobs.launch`` takes the jars already in ``<home>/jars/flink``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from py4j.protocol import Py4JJavaError
from pyflink.datastream import StreamExecutionEnvironment

from config import Settings
from flink_jobs.class_archive import use_class_archive
from flink_jobs.pipeline import build_pipeline
from flink_jobs.runtime import RuntimeOptions, make_environment

log = logging.getLogger(__name__)

__all__ = ["JobFailedError", "completed_at", "installed_jars", "job_options", "latest_checkpoint",
           "make_job_environment", "prepare_flink_log_dir", "prepare_local_flink", "prune_checkpoint_runs",
           "restore_latest", "run", "stale_runs", "submit"]

#: A Flink job id: the name of the folder each run of the job checkpoints into.
_JOB_ID = re.compile(r"[0-9a-f]{32}")

#: Where ``infra.local.jars`` puts the job's jars, under ``Settings.home`` (its ``jar_dir(home, "flink")``).
JAR_DIR = Path("jars") / "flink"


def installed_jars(settings: Settings) -> list[Path]:
    """The jars already in ``<home>/jars/flink``; a clear error when there are none."""
    folder = settings.home / JAR_DIR
    jars = sorted(folder.glob("*.jar"))
    if not jars:
        raise FileNotFoundError(
            f"no Flink jars in {folder}: resolve them with `bash infra/setup.sh` "
            "(or `pulse job run`, which resolves them before it starts the job)"
        )
    return jars


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest completed checkpoint (a ``chk-N`` folder with ``_metadata``) under ``checkpoint_dir``.

    Newest by when its ``_metadata`` was written (once, as the checkpoint completed), then by ``N``;
    not by the folder's time: discarding a subsumed checkpoint deletes the files in its folder, which
    makes the folder newer, so a job killed during that discard left an older checkpoint, with state
    files missing, that looked like the newest one.
    """
    done = list(checkpoint_dir.glob("*/chk-*/_metadata"))
    return max(done, key=completed_at).parent if done else None


def stale_runs(checkpoint_dir: Path, keep: int, protect: Path | None = None) -> list[Path]:
    """Folders of earlier runs of the job (``<job id>/``) beyond the newest ``keep`` that hold a completed checkpoint.

    Each run of the job checkpoints into a folder named by its job id and retains its last
    checkpoint when it stops, so without this every restart leaves a full copy of the state behind.
    A folder is kept when it is among the newest ``keep`` with a completed checkpoint, newer than the
    oldest of those (a run that has not completed one yet, maybe running now), or holds ``protect``
    (the checkpoint being restored). Only folders named like Flink's job ids are considered.
    The new run restores in Flink's no-claim mode: its checkpoints never refer to an older run's files.
    """
    if keep <= 0 or not checkpoint_dir.is_dir():
        return []
    runs = [run for run in checkpoint_dir.iterdir() if run.is_dir() and _JOB_ID.fullmatch(run.name)]
    completed = {run: max(completed_at(m) for m in metas)
                 for run in runs if (metas := list(run.glob("chk-*/_metadata")))}
    kept = sorted(completed, key=completed.__getitem__, reverse=True)[:keep]
    if len(kept) < keep:
        return []
    oldest_kept_ns = completed[kept[-1]][0]
    protected = protect.resolve() if protect is not None else None
    stale = []
    for run in runs:
        if run in kept or (protected is not None and protected.is_relative_to(run.resolve())):
            continue
        newest_ns = completed[run][0] if run in completed else run.stat().st_mtime_ns
        if newest_ns < oldest_kept_ns:
            stale.append(run)
    return sorted(stale)


def completed_at(metadata: Path) -> tuple[int, int]:
    """Order of completed checkpoints: their ``_metadata`` file's time, then the number of ``chk-N``."""
    number = metadata.parent.name.removeprefix("chk-")
    return metadata.stat().st_mtime_ns, int(number) if number.isdigit() else -1


def restore_latest(settings: Settings) -> tuple[Path | None, str | None]:
    """The job's newest checkpoint, and a warning when it had to be taken from the old shared layout.

    Checkpoints live in a folder per job name (``Settings.checkpoint_path``). A job whose folder is
    still empty falls back to the newest checkpoint of the layout before (every job's checkpoints in
    one folder), so an upgrade does not start from empty state; that checkpoint may be another
    job's, which the warning says.
    """
    own = latest_checkpoint(settings.checkpoint_path())
    if own is not None:
        return own, None
    legacy = latest_checkpoint(settings.checkpoint_path().parent)
    if legacy is None:
        return None, None
    return legacy, (f"no checkpoint under {settings.checkpoint_path()} yet: restoring {legacy}, the newest of the "
                    "folder every job shared before (it may be another job's; `--restore none` starts empty)")


def prune_checkpoint_runs(settings: Settings, restore_from: Path | None) -> tuple[list[Path], int]:
    """Delete the checkpoints of earlier runs beyond ``settings.checkpoint_runs_kept``; the folders and bytes freed."""
    stale = stale_runs(settings.checkpoint_path(), settings.checkpoint_runs_kept, protect=restore_from)
    freed = 0
    for run in stale:
        freed += sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
        shutil.rmtree(run, ignore_errors=True)
    return stale, freed


def job_options(
    settings: Settings, jars: Sequence[Path | str], restore_from: Path | None = None, *, jobmanager: str | None = None
) -> RuntimeOptions:
    """How the job runs, from the settings.

    ``jobmanager`` (``host:port`` of a cluster's REST API) makes it submit there instead of
    running a MiniCluster in this process.
    """
    extra = {"execution.state-recovery.path": restore_from.as_uri()} if restore_from else {}
    if jobmanager:
        host, _, port = jobmanager.rpartition(":")
        # A cluster's own config.yaml sets its metrics reporter; the job only says where to go.
        extra |= {"execution.target": "remote", "rest.address": host or "127.0.0.1", "rest.port": port}
    elif settings.metrics_port:
        # Flink's Prometheus reporter: every job metric (Python counters and gauges included) on
        # http://<host>:<metrics_port>/metrics. The MiniCluster only finds the reporter jar on the
        # JVM's classpath (run() puts it there); a standalone cluster loads it from plugins/.
        extra["metrics.reporter.prom.factory.class"] = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        extra["metrics.reporter.prom.port"] = str(settings.metrics_port)
    if settings.python_execution_mode != "thread":
        # The batched stages switch the keyed backend's current key through the embedded
        # interpreter's Java objects, which only thread mode has (docs/adr/0007).
        raise ValueError("the job runs its Python stages in thread mode only (PULSE_PYTHON_EXECUTION_MODE=thread); "
                         f"got {settings.python_execution_mode!r}")
    return RuntimeOptions(
        jars=tuple(jars),
        parallelism=settings.job_parallelism,
        checkpoint_interval_ms=settings.checkpoint_interval_ms,
        checkpoint_dir=settings.checkpoint_path(),
        state_backend=settings.state_backend,
        execution_mode=settings.python_execution_mode,
        bundle_size=settings.bundle_size,
        bundle_time_ms=settings.bundle_time_ms,
        restart_attempts=settings.restart_attempts,
        rest_port=None if jobmanager else settings.job_rest_port,
        extra={**extra, **settings.job_flink_conf},
    )


def make_job_environment(
    settings: Settings, jars: Sequence[Path | str], restore_from: Path | None = None, *, jobmanager: str | None = None
) -> StreamExecutionEnvironment:
    """The execution environment of the job as the settings describe it (see :func:`job_options`)."""
    return make_environment(job_options(settings, jars, restore_from, jobmanager=jobmanager))


def run(
    settings: Settings, *, jars: Sequence[Path | str], restore_from: Path | None = None, bounded: bool = False
) -> None:
    """Build and execute the job on a MiniCluster in this process (blocks until it ends or is cancelled)."""
    prepare_local_flink(settings)
    env = make_job_environment(settings, jars, restore_from)
    build_pipeline(env, settings, bounded=bounded)
    log.info("running %s (parallelism %d)%s", settings.job_name, settings.job_parallelism,
             f", restored from {restore_from}" if restore_from else "")
    try:
        env.execute(settings.job_name)
    except Py4JJavaError as exc:  # after the restart strategy gave up: its causes, not a JVM stack trace
        raise JobFailedError(java_causes(exc.java_exception), restore_from) from exc


class JobFailedError(RuntimeError):
    """The job ended with an error: its chain of causes (outermost first) and the checkpoint it restored.

    >>> print(JobFailedError(["JobExecutionException: Job execution failed.",
    ...     "FlinkException: Could not restore keyed state backend for user-state (1/1)",
    ...     "java.io.FileNotFoundException: /c/chk-34/efdd (No such file or directory)"], Path("/c/chk-34")))
    the job failed: java.io.FileNotFoundException: /c/chk-34/efdd (No such file or directory)
      while restoring /c/chk-34: `--restore none` starts from empty state, `--restore PATH` from another checkpoint
    >>> print(JobFailedError(["JobExecutionException: Job execution failed.", "RuntimeException: boom"], None))
    the job failed: RuntimeException: boom
    """

    def __init__(self, causes: Sequence[str], restored_from: Path | None) -> None:
        self.causes = list(causes) or ["(no cause given)"]
        self.restored_from = restored_from
        super().__init__(str(self))

    def __str__(self) -> str:
        lines = [f"the job failed: {self.causes[-1]}"]
        if self.restored_from is not None and any("restore" in cause.lower() for cause in self.causes):
            lines.append(f"  while restoring {self.restored_from}: `--restore none` starts from empty state, "
                         "`--restore PATH` from another checkpoint")
        return "\n".join(lines)


def java_causes(throwable: object, limit: int = 64) -> list[str]:
    """A Java exception and its causes (``toString`` of each, outermost first) through Py4J."""
    causes: list[str] = []
    current: Any = throwable
    while current is not None and len(causes) < limit:
        causes.append(str(current.toString()))
        cause = current.getCause()
        current = None if cause is None or cause.equals(current) else cause
    return causes


def prepare_flink_log_dir(settings: Settings) -> Path:
    """Where Flink writes its own logs (task failures, restarts), made: ``FLINK_LOG_DIR``, else ``<home>/logs/flink``.

    Set in the environment when unset, so Flink does not write them inside the virtualenv.
    """
    folder = Path(os.environ.setdefault("FLINK_LOG_DIR", str(settings.home / "logs" / "flink")))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def prepare_local_flink(settings: Settings) -> None:
    """What a MiniCluster in this process needs before its JVM starts (the job's and the archive's).

    Flink's log folder (:func:`prepare_flink_log_dir`), with metrics on, the Prometheus reporter
    on the gateway's classpath, and the JVM's class-data-sharing archive (:mod:`flink_jobs.class_archive`).
    """
    prepare_flink_log_dir(settings)
    if settings.metrics_port:
        _put_prometheus_reporter_on_classpath()
    if settings.job_class_archive:  # last: the archive is named after the classpath set above
        log.info("class-data-sharing archive: %s", use_class_archive(settings.home / "jars" / "cds"))


def _put_prometheus_reporter_on_classpath() -> None:
    """The local MiniCluster ignores pyflink/plugins/: the reporter jar must be on the gateway JVM's classpath.

    PyFlink builds that classpath from ``HADOOP_CLASSPATH`` when it starts the JVM (after this).
    """
    import pyflink

    pyflink_home = Path(pyflink.__file__).parent
    reporter_jars = [str(j) for folder in ("plugins", "opt")
                     for j in sorted(pyflink_home.glob(f"{folder}/**/flink-metrics-prometheus-*.jar"))][:1]
    if not reporter_jars:
        log.warning("flink-metrics-prometheus jar not found under %s; no Prometheus metrics", pyflink_home)
        return
    current = os.environ.get("HADOOP_CLASSPATH", "")
    if reporter_jars[0] not in current.split(os.pathsep):
        os.environ["HADOOP_CLASSPATH"] = os.pathsep.join(p for p in (current, reporter_jars[0]) if p)


def submit(
    settings: Settings, jobmanager: str, *, jars: Sequence[Path | str], restore_from: Path | None = None
) -> str:
    """Submit the job to the standalone cluster at ``jobmanager`` (REST ``host:port``); its job id.

    The job is compiled here and runs on the cluster's TaskManagers, which must see the same
    virtualenv and repository paths (``python.pythonpath``): true for ``pulse up --flink``.
    """
    env = make_job_environment(settings, jars, restore_from, jobmanager=jobmanager)
    build_pipeline(env, settings)
    client = env.execute_async(settings.job_name)
    job_id = str(client.get_job_id())
    log.info("submitted %s to %s as %s (parallelism %d)%s", settings.job_name, jobmanager, job_id,
             settings.job_parallelism, f", restored from {restore_from}" if restore_from else "")
    return job_id


def main() -> None:
    """``python -m flink_jobs.launch``: the job, settings from ``PULSE_*`` only, jars from ``<home>/jars/flink``.

    For ``flink run -pym flink_jobs.launch`` and container entry points; resumes from the latest
    retained checkpoint. ``pulse job run`` is the same with flags (and resolves the jars first).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    try:
        jars = installed_jars(settings)
    except FileNotFoundError as exc:
        raise SystemExit(f"error: {exc}") from None
    restore_from, warning = restore_latest(settings)
    if warning:
        log.warning(warning)
    pruned, freed = prune_checkpoint_runs(settings, restore_from)
    if pruned:
        log.info("deleted the checkpoints of %d earlier runs (%.1f MB)", len(pruned), freed / 1e6)
    try:
        run(settings, jars=jars, restore_from=restore_from)
    except JobFailedError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
