"""A class-data-sharing archive for the local job's JVM: its classes mapped from a file, not loaded one by one.

PyFlink starts a JVM for every `pulse job run` (and `pulse archive run`, the demo's job, each test's
job) and loads the same ~10,000 classes of Flink, Pekko, Kafka and PyFlink each time. JDK 13+ can
record them at a JVM's exit (``-XX:ArchiveClassesAtExit``) and map the record on later starts
(``-XX:SharedArchiveFile``): a job's start then takes ~1.3 s less wall time and ~1.6 s less CPU
(medians of 9 pairs; docs/adr/0007, "Twenty-first session"), and the job runs as fast as without.

The first start records (the archive is written when that JVM exits, a second or two later than
without); the next start checks the record with the JVM itself (``-Xshare:on ... -version``: a record
cut short by a kill does not map) and then uses it. The archive's name is a hash of the java binary
and of every classpath entry (path, size, mtime), so a new Flink, connector jar or JDK records a new
one and never maps a stale one. ``PULSE_JOB_CLASS_ARCHIVE=false`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import time
from collections.abc import MutableMapping
from pathlib import Path

from pyflink import pyflink_gateway_server as gateway

log = logging.getLogger(__name__)

__all__ = ["archive_name", "use_class_archive"]

#: CDS's own warnings (classes it skips while recording, an archive it cannot map) off: the job's
#: output stays the job's; a record that cannot be used is found by the check below instead.
QUIET = "-Xlog:cds*=off"
#: A record cut short (a killed JVM) is deleted after this long; a JVM still writing one is younger.
STALE_RECORD_S = 600.0


def archive_name(java: Path, classpath: str) -> str:
    """The archive's file name: a hash of the java binary and each classpath entry's path, size and mtime.

    >>> archive_name(Path("/no/java"), "/no/a.jar:/no/b.jar") == archive_name(Path("/no/java"), "/no/a.jar:/no/b.jar")
    True
    >>> archive_name(Path("/no/java"), "/no/a.jar") != archive_name(Path("/no/java"), "/no/b.jar")
    True
    """
    digest = hashlib.sha256()
    for entry in [str(java), *classpath.split(os.pathsep)]:
        try:
            stat = os.stat(entry)
            digest.update(f"{entry}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{entry}\0-\n".encode())
    return f"flink-{digest.hexdigest()[:20]}.jsa"


def use_class_archive(folder: Path, env: MutableMapping[str, str] | None = None) -> str:
    """Put the archive's option into ``JVM_ARGS`` (PyFlink's gateway reads it): map it, or record it.

    Returns what was done: ``"mapped"``, ``"recording"`` or why not (``"off"`` when ``JVM_ARGS`` already
    names an archive, no java, ...). Call it just before PyFlink starts its JVM.
    """
    env = os.environ if env is None else env
    jvm_args = env.get("JVM_ARGS", "")
    if "SharedArchiveFile" in jvm_args or "ArchiveClassesAtExit" in jvm_args or "-Xshare:off" in jvm_args:
        return "off: JVM_ARGS has its own"
    java_bin = _gateway_java()
    if java_bin is None:
        return "off: no java"
    classpath = _gateway_classpath(env)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a read-only home: the job starts as it did without
        return f"off: {error}"
    if not os.access(folder, os.W_OK):
        return f"off: {folder} is not writable"
    archive = folder / archive_name(java_bin, classpath)
    _sweep_records(archive, java_bin, classpath)
    if archive.is_file():
        option, done = f"-XX:SharedArchiveFile={archive}", "mapped"
    else:
        option, done = f"-XX:ArchiveClassesAtExit={archive}.{os.getpid()}.record", "recording"
    env["JVM_ARGS"] = " ".join(part for part in (jvm_args, QUIET, option) if part)
    return done


def _sweep_records(archive: Path, java_bin: Path, classpath: str) -> None:
    """The first complete record of ``archive`` (one the JVM maps) becomes it; old ones that did not go.

    Two jobs started at once both record; the second record, and any cut short, is deleted once older
    than :data:`STALE_RECORD_S` (a JVM still writing one is younger).
    """
    for record in sorted(archive.parent.glob(f"{archive.name}.*.record")):
        try:
            age_s = time.time() - record.stat().st_mtime
        except OSError:
            continue
        if not archive.is_file() and _maps(java_bin, classpath, record):
            record.replace(archive)
            log.info("class-data-sharing archive %s recorded; later job starts map it", archive)
        elif age_s > STALE_RECORD_S:
            record.unlink(missing_ok=True)


def _maps(java_bin: Path, classpath: str, record: Path) -> bool:
    """Whether the JVM maps ``record`` with this classpath (``-Xshare:on`` exits non-zero when not).

    A record cut short crashes the mapping JVM (SIGBUS past the file's end): that JVM is this check's,
    never a job's, and its crash report goes nowhere.
    """
    try:
        return subprocess.run([str(java_bin), "-Xshare:on", QUIET, "-XX:ErrorFile=/dev/null",
                               f"-XX:SharedArchiveFile={record}", "-cp", classpath, "-version"],
                              capture_output=True, timeout=30, cwd=record.parent).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _gateway_java() -> Path | None:
    """The java PyFlink starts its gateway with (``find_java_executable``), resolved; None when there is none."""
    found = shutil.which(gateway.find_java_executable())
    return Path(found).resolve() if found else None


def _gateway_classpath(env: MutableMapping[str, str]) -> str:
    """The classpath PyFlink gives its gateway JVM (``pyflink_gateway_server``), computed the same way."""
    copy = dict(env)
    gateway.prepare_environment_variables(copy)
    return os.pathsep.join([gateway.construct_flink_classpath(copy), gateway.construct_hadoop_classpath(copy)])
