"""Jars Pulse runs on, resolved from Maven Central by ``mvn`` with ``infra/maven/pom.xml``.

``kafka``: the broker's classpath; ``flink``: the shaded Kafka connector the job loads.
A stamp file holding the pom's hash makes resolution run once per pom change.
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
PROFILES = ("kafka", "flink")


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
    return sorted(target.glob("*.jar"))


if __name__ == "__main__":
    import sys

    from pulse.settings import Settings

    home = Settings().home
    for name in PROFILES:
        try:
            jars = ensure_jars(home, name)
        except ServiceError as exc:
            sys.exit(str(exc))
        print(f"{name}: {len(jars)} jars in {jar_dir(home, name)}")
