"""Jars Pulse runs on, resolved from Maven Central by ``mvn`` with ``infra/maven/pom.xml``.

``kafka``: the broker's classpath; ``archive``: Flink's Parquet format and the few Hadoop classes it
needs (``pulse archive run``, ADR 0011); ``flink``: the shaded Kafka connector the job loads, plus
``pulse-flink-kafka.jar`` compiled here with ``javac`` from ``flink_jobs/java`` (the Kafka record
deserializer that tells the job each record's partition and offset).
Stamp files holding the pom's / sources' hash make each step run once per change.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from pathlib import Path

from infra.local.process import ServiceError

log = logging.getLogger(__name__)

POM = Path(__file__).resolve().parent.parent / "maven" / "pom.xml"
PROFILES = ("kafka", "flink", "archive")
JAVA_SOURCES = Path(__file__).resolve().parent.parent.parent / "flink_jobs" / "java"
PULSE_JAR = "pulse-flink-kafka.jar"


def jar_dir(home: Path, profile: str) -> Path:
    """Where the jars of ``profile`` live."""
    return home / "jars" / profile


def ensure_jars(home: Path, profile: str) -> list[Path]:
    """Resolve the jars of ``profile`` into ``<home>/jars/<profile>`` unless already there."""
    if profile not in PROFILES:
        raise ValueError(f"unknown jar profile {profile!r}; one of {PROFILES}")
    target = jar_dir(home, profile)
    stamp = target / ".pom-sha256"
    want = hashlib.sha256(POM.read_bytes()).hexdigest()
    if not (stamp.exists() and stamp.read_text() == want):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ServiceError(
                "Maven (`mvn`) is needed to fetch Kafka and Flink jars; install it (apt-get install maven)"
            )
        if target.exists():
            shutil.rmtree(target)
        log.info("resolving %s jars with mvn into %s", profile, target)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                f"-P{profile}",
                f"-Djars.dir={home / 'jars'}",
                "dependency:copy-dependencies",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"mvn could not resolve the {profile} jars:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        stamp.write_text(want)
    if profile == "flink":
        build_pulse_jar(target)
    return sorted(target.glob("*.jar"))


def build_pulse_jar(target: Path) -> Path:
    """Compile ``flink_jobs/java`` against the wheel's Flink and the connector into ``target``."""
    import pyflink

    sources = sorted(JAVA_SOURCES.rglob("*.java"))
    jar = target / PULSE_JAR
    stamp = target / ".pulse-java-sha256"
    want = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    if jar.exists() and stamp.exists() and stamp.read_text() == want:
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar_tool is None:
        raise ServiceError("a JDK (javac, jar) is needed to build the job's Kafka deserializer: "
                           "apt-get install openjdk-17-jdk-headless")
    flink_lib = Path(pyflink.__file__).resolve().parent / "lib"
    classpath = f"{flink_lib}/*:{target}/*"
    classes = target / ".classes"
    shutil.rmtree(classes, ignore_errors=True)
    log.info("compiling %s into %s", JAVA_SOURCES, jar)
    for cmd in ([javac, "-nowarn", "--release", "11", "-cp", classpath, "-d", str(classes), *map(str, sources)],
                [jar_tool, "cf", str(jar), "-C", str(classes), "."]):
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ServiceError(f"`{' '.join(cmd[:2])} ...` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    shutil.rmtree(classes, ignore_errors=True)
    stamp.write_text(want)
    return jar


if __name__ == "__main__":
    import sys

    from config import Settings

    home = Settings().home
    for name in PROFILES:
        try:
            jars = ensure_jars(home, name)
        except ServiceError as exc:
            sys.exit(str(exc))
        print(f"{name}: {len(jars)} jars in {jar_dir(home, name)}")
