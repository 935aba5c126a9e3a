"""A local Schema Registry: Apicurio Registry built by ``infra/registry/pom.xml``, on loopback.

Apicurio Registry (Apache-2.0) serves the Confluent Schema Registry API under
``/apis/ccompat/v7``, which ``confluent_kafka.schema_registry`` (and so
:class:`schemas.registry.ConfluentRegistry`) speaks. Storage is in memory: a restart forgets
every schema, which is what tests want.

Maven Central has Apicurio's application module but no runnable jar, so the pom builds one with
Quarkus; a few of 3.0.9's modules are not on Maven Central and the pom says what stands in for
them. One of them is the parent pom ``io.apicurio:apicurio-registry:3.0.9``, which the build
needs before Maven can read the application's dependencies: :func:`build_registry` installs
3.0.7's parent (the nearest published) under 3.0.9's version into the local Maven repository.
The build runs once per change of the pom or its sources (a stamp holds their hash).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

from infra.local.process import ManagedProcess, ServiceError

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parent.parent / "registry"
RUNNER = "pulse-schema-registry-0.1.0-runner.jar"
#: The parent pom 3.0.9's modules name, and the published one that stands in for it.
PARENT, PARENT_STAND_IN = "3.0.9", "3.0.7"
CCOMPAT_PATH = "/apis/ccompat/v7"


def _sources_hash() -> str:
    files = sorted(p for p in PROJECT.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(PROJECT).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def _mvn(*args: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (`mvn`) is needed to build the local Schema Registry (apt-get install maven)")
    result = subprocess.run([mvn, "-q", "-B", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServiceError(f"`mvn {' '.join(args[:3])} ...` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")


def _install_parent_stand_in() -> None:
    """Install Apicurio's 3.0.7 parent pom as 3.0.9 into the local Maven repository (see module doc)."""
    _mvn("dependency:get", f"-Dartifact=io.apicurio:apicurio-registry:{PARENT_STAND_IN}:pom", "-Dtransitive=false")
    repo = Path.home() / ".m2" / "repository" / "io" / "apicurio" / "apicurio-registry"
    text = (repo / PARENT_STAND_IN / f"apicurio-registry-{PARENT_STAND_IN}.pom").read_text()
    own = f"<version>{PARENT_STAND_IN}</version>"
    if own not in text:
        raise ServiceError(f"Apicurio's parent pom {PARENT_STAND_IN} does not name its own version")
    with tempfile.TemporaryDirectory() as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_text(text.replace(own, f"<version>{PARENT}</version>", 1))
        _mvn("install:install-file", f"-Dfile={pom}", f"-DpomFile={pom}", "-Dpackaging=pom")


def build_registry(build_dir: Path) -> Path:
    """The runnable registry jar in ``build_dir``, built with ``mvn`` unless it is current."""
    jar, stamp = build_dir / RUNNER, build_dir / ".sources-sha256"
    want = _sources_hash()
    if jar.exists() and stamp.exists() and stamp.read_text() == want:
        return jar
    log.info("building the local Schema Registry into %s (a few minutes the first time)", build_dir)
    _install_parent_stand_in()
    _mvn("-f", str(PROJECT / "pom.xml"), f"-Dregistry.build.dir={build_dir}", "-DskipTests", "package")
    if not jar.exists():
        raise ServiceError(f"the registry build finished without {jar}")
    stamp.write_text(want)
    return jar


class SchemaRegistryServer:
    """The registry on ``127.0.0.1:port``, logging to ``<home>/logs/schema-registry.log``."""

    def __init__(self, home: Path, port: int, build_dir: Path) -> None:
        self.port = port
        self.build_dir = build_dir
        self.process = ManagedProcess("schema-registry", home, ports=(port,),
                                      markers=(RUNNER, f"quarkus.http.port={port}"))

    @property
    def url(self) -> str:
        """What ``PULSE_SCHEMA_REGISTRY_URL`` should be: the Confluent-compatible API's root."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def start(self, timeout_s: float) -> int:
        """Start unless running and wait until the API answers."""
        if self.process.pid() is None:
            jar = build_registry(self.build_dir)
            java = shutil.which("java")
            if java is None:
                raise ServiceError("java is needed to run the local Schema Registry (apt-get install openjdk-17-jre)")
            self.process.start([java, "-Xmx512m", f"-Dquarkus.http.port={self.port}",
                                "-Dquarkus.http.host=127.0.0.1", "-jar", str(jar)], cwd=self.build_dir)
        self.process.wait_healthy(self.healthy, timeout_s)
        return self.process.pid() or 0

    def healthy(self) -> bool:
        """The subjects list answers."""
        with urllib.request.urlopen(f"{self.url}/subjects", timeout=2) as response:
            return bool(response.status == 200)


if __name__ == "__main__":
    import sys

    from config import Settings

    try:
        print(build_registry(Settings().home / "registry"))
    except ServiceError as exc:
        sys.exit(str(exc))
