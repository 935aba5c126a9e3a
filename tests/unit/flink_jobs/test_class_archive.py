"""The job JVM's class-data-sharing archive: recorded once, checked by the JVM, then mapped; never a stale one.

A real ``java`` (the project needs Java 17 anyway) records and maps archives of a tiny classpath here;
PyFlink's classpath is swapped for it so each JVM start is a fraction of a second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from flink_jobs import class_archive
from flink_jobs.class_archive import QUIET, STALE_RECORD_S, archive_name, use_class_archive

JAVA = shutil.which("java")
pytestmark = pytest.mark.skipif(JAVA is None and not os.environ.get("CI"), reason="needs java")


@pytest.fixture
def classpath(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "classes"
    folder.mkdir()
    monkeypatch.setattr(class_archive, "_gateway_classpath", lambda env: str(folder))
    return str(folder)


def _record_as_the_jvm_would(jvm_args: str, classpath: str) -> None:
    """Run the JVM a job would start with these ``JVM_ARGS``: it writes its record on exit."""
    subprocess.run([JAVA or "java", *jvm_args.split(), "-cp", classpath, "-version"], capture_output=True,
                   check=True)


def test_the_first_start_records_the_next_maps(tmp_path: Path, classpath: str) -> None:
    folder = tmp_path / "cds"
    first = {"JVM_ARGS": "-XX:+UseSerialGC"}
    assert use_class_archive(folder, first) == "recording"
    assert first["JVM_ARGS"].startswith(f"-XX:+UseSerialGC {QUIET} -XX:ArchiveClassesAtExit=")
    _record_as_the_jvm_would(first["JVM_ARGS"], classpath)

    second: dict[str, str] = {}
    assert use_class_archive(folder, second) == "mapped"
    archive = folder / archive_name(Path(JAVA or "java").resolve(), classpath)
    assert second["JVM_ARGS"] == f"{QUIET} -XX:SharedArchiveFile={archive}"
    assert [p.name for p in folder.iterdir()] == [archive.name]  # the record became the archive
    mapped = subprocess.run([JAVA or "java", "-Xshare:on", *second["JVM_ARGS"].split(), "-cp", classpath,
                             "-version"], capture_output=True, text=True)
    assert mapped.returncode == 0 and "sharing" in mapped.stderr


def test_a_record_cut_short_is_never_mapped_and_goes_when_old(tmp_path: Path, classpath: str) -> None:
    folder = tmp_path / "cds"
    env = {"JVM_ARGS": ""}
    use_class_archive(folder, env)
    _record_as_the_jvm_would(env["JVM_ARGS"], classpath)
    [record] = folder.iterdir()
    whole = record.read_bytes()
    record.chmod(0o600)
    record.write_bytes(whole[: len(whole) // 3])  # a JVM killed while writing it

    assert use_class_archive(folder, {}) == "recording"  # checked, not mapped: a job's JVM would crash on it
    assert record.exists()  # young: a JVM may still be writing it
    old = record.stat().st_mtime - STALE_RECORD_S - 1
    os.utime(record, (old, old))
    use_class_archive(folder, {})
    assert not record.exists()
    assert not list(tmp_path.rglob("hs_err_pid*"))  # the checking JVM's crash leaves no report behind


def test_a_new_jar_or_java_names_a_new_archive(tmp_path: Path) -> None:
    jar = tmp_path / "a.jar"
    jar.write_bytes(b"one")
    before = archive_name(Path("/usr/bin/java"), str(jar))
    jar.write_bytes(b"three")  # another size
    assert archive_name(Path("/usr/bin/java"), str(jar)) != before
    assert archive_name(Path("/opt/jdk/bin/java"), str(jar)) != archive_name(Path("/usr/bin/java"), str(jar))


def test_jvm_args_that_name_their_own_archive_are_left_alone(tmp_path: Path, classpath: str) -> None:
    for own in ("-XX:SharedArchiveFile=/x.jsa", "-Xshare:off", "-XX:ArchiveClassesAtExit=/y.jsa"):
        env = {"JVM_ARGS": own}
        assert use_class_archive(tmp_path, env).startswith("off")
        assert env == {"JVM_ARGS": own}


def test_a_folder_it_cannot_make_leaves_the_jvm_as_it_was(tmp_path: Path, classpath: str) -> None:
    (tmp_path / "jars").write_bytes(b"")  # a file where the folder would go (as a read-only home would refuse it)
    env = {"JVM_ARGS": "-XX:+UseSerialGC"}
    assert use_class_archive(tmp_path / "jars" / "cds", env).startswith("off")
    assert env == {"JVM_ARGS": "-XX:+UseSerialGC"}
