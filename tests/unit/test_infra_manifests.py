"""The Docker Compose and Kubernetes manifests agree with the code (no Docker, no cluster needed).

Checked: every image is pinned (a tag with a full x.y.z version, never ``latest``); Flink, the
Kafka connector and Kafka are the versions of pyproject.toml / infra/maven/pom.xml / ADR 0001;
ports are the :class:`Settings` defaults and the Prometheus scrape targets; every ``PULSE_*``
name is a real setting; no secret value is written in a file.

Each check is a function returning a list of problems. It must return none for the files as
they are, and — so that every check can fail — some for a copy of the files with one mutation.
"""

from __future__ import annotations

import re
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
import yaml
from pydantic import SecretStr

from config import REPO_ROOT, Settings
from config.connections import ConnectionSecurity

INFRA = REPO_ROOT / "infra"
COMPOSE = "infra/docker-compose.yml"
DOCKERFILE = "infra/docker/Dockerfile"
COMPOSE_PROMETHEUS = "infra/docker/prometheus.yml"
LOCAL_PROMETHEUS = "infra/observability/prometheus.yml"
K8S = "infra/k8s"

DEFAULTS = Settings()
ENV_PREFIX = Settings.model_config.get("env_prefix", "")
SETTING_ENV_NAMES = {f"{ENV_PREFIX}{name}".upper() for name in Settings.model_fields}
SECRET_ENV_NAMES = {
    f"{ENV_PREFIX}{name}".upper()
    for name, field in Settings.model_fields.items()
    if SecretStr in (field.annotation, *typing.get_args(field.annotation))
}
#: Secrets of a secured Kafka or Redis (config/connections.py): a deployment sets them only when its
#: cluster needs them (README "Connecting to your Kafka and Redis"), so none is required here.
SECURED_CLUSTER_SECRETS = {f"{ENV_PREFIX}{name}".upper() for name in ConnectionSecurity.model_fields}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN|CREDENTIAL", re.IGNORECASE)
FULL_VERSION = re.compile(r"\d+\.\d+\.\d+")


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------
def manifest_files() -> dict[str, str]:
    """Every manifest this test reads: path (relative to the repo) -> text."""
    paths = [INFRA / "docker-compose.yml", INFRA / "docker" / "Dockerfile", INFRA / "docker" / "prometheus.yml",
             INFRA / "observability" / "prometheus.yml", *sorted((INFRA / "docker" / "grafana").rglob("*.yml")),
             *sorted((INFRA / "k8s").glob("*.yaml"))]
    return {str(p.relative_to(REPO_ROOT)): p.read_text() for p in paths}


@dataclass
class Bundle:
    texts: dict[str, str]

    def yaml(self, path: str) -> Any:
        return yaml.safe_load(self.texts[path])

    @property
    def compose(self) -> dict[str, Any]:
        return self.yaml(COMPOSE)

    def services(self) -> dict[str, dict[str, Any]]:
        return self.compose["services"]

    def env(self, service: str) -> dict[str, str]:
        return {k: str(v) for k, v in (self.services()[service].get("environment") or {}).items()}

    def k8s_docs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for path, text in self.texts.items():
            if path.startswith(K8S + "/"):
                for doc in yaml.safe_load_all(text):
                    if doc:
                        yield path, doc

    def k8s(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [d for _, d in self.k8s_docs() if d.get("kind") == kind and name in (None, d["metadata"]["name"])]

    def dockerfile_args(self) -> dict[str, str]:
        return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", self.texts[DOCKERFILE], re.MULTILINE))


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return Bundle(manifest_files())


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested dicts and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def split_image(ref: str) -> tuple[str, str | None]:
    """``repo[:tag]`` -> (repo, tag or None); a registry port is not a tag."""
    name, _, last = ref.rpartition("/")
    if ":" in last:
        repo, tag = last.split(":", 1)
        return f"{name}/{repo}" if name else repo, tag
    return ref, None


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def flink_properties(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in text.splitlines()) if k.strip()}


# ------------------------------------------------------------------------------------------------
# What the project pins
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pins:
    flink: str  # apache-flink in pyproject.toml
    pulse: str  # project version
    kafka: str  # pom kafka.version
    connector: str  # pom flink.kafka.connector.version
    adr: str  # docs/adr/0001-versions.md


def project_pins() -> Pins:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    deps = dict(d.split("==") for d in pyproject["project"]["dependencies"])
    pom = ElementTree.parse(INFRA / "maven" / "pom.xml").getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}

    def prop(name: str) -> str:
        found = pom.find(f"m:properties/m:{name}", ns)
        assert found is not None and found.text, f"pom.xml has no <{name}>"
        return found.text

    return Pins(flink=deps["apache-flink"], pulse=pyproject["project"]["version"], kafka=prop("kafka.version"),
                connector=prop("flink.kafka.connector.version"),
                adr=(REPO_ROOT / "docs" / "adr" / "0001-versions.md").read_text())


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------
def all_images(b: Bundle) -> list[tuple[str, str]]:
    """(where, image reference) for compose services, Kubernetes objects and the Dockerfile's FROMs."""
    found = [(f"{COMPOSE}:{name}", svc["image"]) for name, svc in b.services().items() if "image" in svc]
    found += [(path, v) for path, doc in b.k8s_docs() for k, v in walk(doc) if k == "image" and isinstance(v, str)]
    args = b.dockerfile_args()
    stages = set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", b.texts[DOCKERFILE], re.MULTILINE | re.IGNORECASE))
    for ref in re.findall(r"^FROM\s+(\S+)", b.texts[DOCKERFILE], re.MULTILINE):
        if ref not in stages:  # `FROM <earlier stage>` is no image of its own
            found.append((DOCKERFILE, re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)))
    return found


def image_problems(b: Bundle) -> list[str]:
    problems = []
    for where, ref in all_images(b):
        _, tag = split_image(ref)
        if tag is None:
            problems.append(f"{where}: {ref} has no tag")
        elif tag == "latest" or not FULL_VERSION.search(tag):
            problems.append(f"{where}: {ref} is not pinned to an x.y.z version")
    problems += [f"{COMPOSE}:{name} has no image (a build without a tag is unpinned)"
                 for name, svc in b.services().items() if "image" not in svc]
    return problems


def version_problems(b: Bundle, pins: Pins) -> list[str]:
    problems = []
    flink_minor = ".".join(pins.flink.split(".")[:2])
    images = dict((split_image(ref) for _, ref in all_images(b)))
    flink_tag = images.get("flink") or ""
    if not flink_tag.startswith(f"{pins.flink}-") or "java17" not in flink_tag:
        problems.append(f"Dockerfile's flink image {flink_tag!r} is not Flink {pins.flink} on Java 17")
    if images.get("apache/kafka") != pins.kafka:
        problems.append(f"Kafka image {images.get('apache/kafka')!r} != pom kafka.version {pins.kafka}")
    if f"Kafka {pins.kafka}" not in pins.adr or f"apache-flink {pins.flink}" not in pins.adr:
        problems.append("ADR 0001 does not name the pinned Flink/Kafka versions")
    if pins.connector not in pins.adr:
        problems.append(f"ADR 0001 does not name connector {pins.connector}")
    if not re.search(r"mvn .*-f \S*pom\.xml -Pflink", b.texts[DOCKERFILE]) or "infra/maven/pom.xml" not in b.texts[
            DOCKERFILE]:
        problems.append("Dockerfile does not resolve the Flink jars from infra/maven/pom.xml (-Pflink)")
    if not re.search(r"mvn .*-f \S*pom\.xml -Parchive", b.texts[DOCKERFILE]) or not re.search(
            r"COPY --from=\S+ /jars/archive/ \S+/jars/archive/", b.texts[DOCKERFILE]):
        problems.append("Dockerfile does not ship the archive jars (-Parchive) where pulse archive run looks")
    if not pins.connector.endswith(f"-{flink_minor}"):
        problems.append(f"connector {pins.connector} is not built for Flink {flink_minor}")
    for where, ref in all_images(b):
        repo, tag = split_image(ref)
        if repo == "pulse" and tag != pins.pulse:
            problems.append(f"{where}: {ref} != pulse:{pins.pulse} (pyproject version)")
    for deployment in b.k8s("FlinkDeployment"):
        spec = deployment["spec"]
        if spec.get("flinkVersion") != "v" + flink_minor.replace(".", "_"):
            problems.append(f"FlinkDeployment flinkVersion {spec.get('flinkVersion')} is not Flink {flink_minor}")
        if spec["job"].get("jarURI") != f"local:///opt/flink/opt/flink-python-{pins.flink}.jar":
            problems.append(f"FlinkDeployment jarURI {spec['job'].get('jarURI')} is not flink-python {pins.flink}")
    return problems


def _published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port of a compose service."""
    out = {}
    for mapping in service.get("ports", []):
        host, _, container = str(mapping).rpartition(":")
        out[int(container)] = int(host or container)
    return out


def _scrape_ports(b: Bundle, path: str) -> dict[str, set[int]]:
    config = b.yaml(path)
    return {job["job_name"]: {port_of(t) for sc in job["static_configs"] for t in sc["targets"]}
            for job in config["scrape_configs"]}


def port_problems(b: Bundle, s: Settings = DEFAULTS) -> list[str]:
    problems: list[str] = []

    def expect(what: str, got: object, want: object) -> None:
        if str(got) != str(want):
            problems.append(f"{what}: {got} != {want}")

    services = b.services()
    # Kafka: the host listener is `pulse up`'s address; containers use the internal listener.
    kafka_env = b.env("kafka")
    listeners = dict(item.split("://") for item in kafka_env["KAFKA_LISTENERS"].split(","))
    expect("kafka HOST listener", port_of(listeners["HOST"]), s.kafka_port)
    expect("kafka CONTROLLER listener", port_of(listeners["CONTROLLER"]), s.kafka_controller_port)
    expect("kafka published port", _published(services["kafka"]).get(s.kafka_port), s.kafka_port)
    expect("compose PULSE_KAFKA_BOOTSTRAP", port_of(services["serving"]["environment"]["PULSE_KAFKA_BOOTSTRAP"]),
           port_of(listeners["INTERNAL"]))
    # Redis.
    redis_command = " ".join(services["redis"]["command"])
    expect("redis --port", re.search(r"--port (\d+)", redis_command).group(1) if "--port" in redis_command else None,
           s.redis_port)
    expect("redis published port", _published(services["redis"]).get(s.redis_port), s.redis_port)
    for where, url in [("compose", b.env("serving")["PULSE_REDIS_URL"]),
                       ("k8s", b.k8s("ConfigMap")[0]["data"]["PULSE_REDIS_URL"])]:
        expect(f"{where} PULSE_REDIS_URL port", urlsplit(url).port, s.redis_port)
    expect("k8s PULSE_KAFKA_BOOTSTRAP port", port_of(b.k8s("ConfigMap")[0]["data"]["PULSE_KAFKA_BOOTSTRAP"]),
           s.kafka_port)
    # Serving and exporter.
    expect("compose serving PULSE_SERVING_PORT", b.env("serving").get("PULSE_SERVING_PORT"), s.serving_port)
    expect("compose serving published", _published(services["serving"]).get(s.serving_port), s.serving_port)
    expect("compose exporter PULSE_EXPORTER_PORT", b.env("exporter").get("PULSE_EXPORTER_PORT"), s.exporter_port)
    expect("compose exporter published", _published(services["exporter"]).get(s.exporter_port), s.exporter_port)
    # The job's Prometheus reporter, on the compose cluster and the Kubernetes one.
    for service in ("jobmanager", "taskmanager"):
        props = flink_properties(b.env(service)["FLINK_PROPERTIES"])
        expect(f"compose {service} metrics.reporter.prom.port", props.get("metrics.reporter.prom.port"), s.metrics_port)
    for deployment in b.k8s("FlinkDeployment"):
        spec = deployment["spec"]
        expect("FlinkDeployment metrics.reporter.prom.port",
               spec["flinkConfiguration"].get("metrics.reporter.prom.port"), s.metrics_port)
        expect("FlinkDeployment prometheus.io/port",
               spec["podTemplate"]["metadata"]["annotations"].get("prometheus.io/port"), s.metrics_port)
        ports = [p["containerPort"] for c in spec["podTemplate"]["spec"]["containers"] for p in c.get("ports", [])]
        expect("FlinkDeployment metrics containerPort", ports, [s.metrics_port])
    # Kubernetes serving and exporter.
    config_map = b.k8s("ConfigMap", "pulse-config")[0]["data"]
    expect("k8s PULSE_SERVING_PORT", config_map.get("PULSE_SERVING_PORT"), s.serving_port)
    expect("k8s PULSE_EXPORTER_PORT", config_map.get("PULSE_EXPORTER_PORT"), s.exporter_port)
    for name, want in (("pulse-serving", s.serving_port), ("pulse-exporter", s.exporter_port)):
        (deployment,) = b.k8s("Deployment", name)
        container_ports = [p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
                           for p in c.get("ports", [])]
        expect(f"k8s {name} containerPort", container_ports, [want])
        annotations = deployment["spec"]["template"]["metadata"].get("annotations", {})
        expect(f"k8s {name} prometheus.io/port", annotations.get("prometheus.io/port"), want)
        (k8s_service,) = b.k8s("Service", name)
        expect(f"k8s Service {name} port", [p["port"] for p in k8s_service["spec"]["ports"]], [want])
    # Scrape targets: the local file targets the default ports; the compose file the same jobs and ports.
    want_scrape = {"pulse-job": {s.metrics_port}, "pulse-exporter": {s.exporter_port},
                   "pulse-serving": {s.serving_port}}
    expect(LOCAL_PROMETHEUS, _scrape_ports(b, LOCAL_PROMETHEUS), want_scrape)
    expect(COMPOSE_PROMETHEUS, _scrape_ports(b, COMPOSE_PROMETHEUS), want_scrape)
    hosts = {t.rsplit(":", 1)[0] for job in b.yaml(COMPOSE_PROMETHEUS)["scrape_configs"]
             for sc in job["static_configs"] for t in sc["targets"]}
    if not hosts <= set(services):
        problems.append(f"{COMPOSE_PROMETHEUS} scrapes hosts that are not compose services: {hosts - set(services)}")
    return problems


def env_name_problems(b: Bundle) -> list[str]:
    problems = []
    for path, text in b.texts.items():
        for name in sorted(set(re.findall(r"\bPULSE_[A-Z0-9_]+\b", text))):
            if name not in SETTING_ENV_NAMES:
                problems.append(f"{path}: {name} is not a setting of config/settings.py")
    return problems


REQUIRED_INTERPOLATION = re.compile(r"^\$\{[A-Z_][A-Z0-9_]*:\?[^}]*\}$")


def secret_problems(b: Bundle) -> list[str]:
    problems = []
    # Compose: secret variables only as ${VAR:?message} (required, no default value).
    compose = b.compose
    envs = [(f"x:{k}", v) for k, v in compose.items() if k.startswith("x-") and isinstance(v, dict)]
    envs += [(name, svc.get("environment") or {}) for name, svc in compose["services"].items()]
    for where, env in envs:
        for key, value in env.items():
            if (key in SECRET_ENV_NAMES or SECRET_NAME.search(key)) and not REQUIRED_INTERPOLATION.match(str(value)):
                problems.append(f"{COMPOSE} {where}: {key} is not a required ${{...:?}} interpolation")
    # Kubernetes: secrets only from a Secret; no Secret object with data in the repo.
    for path, doc in b.k8s_docs():
        if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
            problems.append(f"{path}: Secret {doc['metadata']['name']} carries values")
        if doc.get("kind") == "ConfigMap":
            problems += [f"{path}: ConfigMap holds secret {k}" for k in doc.get("data", {})
                         if k in SECRET_ENV_NAMES or SECRET_NAME.search(k)]
        for key, value in walk(doc):
            if key == "env":
                for item in value:
                    secret = item["name"] in SECRET_ENV_NAMES or SECRET_NAME.search(item["name"])
                    if secret and ("value" in item or "secretKeyRef" not in item.get("valueFrom", {})):
                        problems.append(f"{path}: {item['name']} is not taken from a Secret")
    # Everywhere: no secret-named ENV/ARG in the Dockerfile, no credentials inside URLs.
    for name in re.findall(r"^(?:ENV|ARG)\s+(\w+)", b.texts[DOCKERFILE], re.MULTILINE):
        if name in SECRET_ENV_NAMES or SECRET_NAME.search(name):
            problems.append(f"{DOCKERFILE}: {name} baked into the image")
    for path, text in b.texts.items():
        for url in re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'/]*@[^\s\"']*", text):
            if urlsplit(url).password:
                problems.append(f"{path}: URL with a password: {url}")
    # Both services that need a secret actually receive one (else the checks above pass vacuously).
    for service, names in (("serving", SECRET_ENV_NAMES - SECURED_CLUSTER_SECRETS),
                           ("jobmanager", {"PULSE_REDIS_PASSWORD"})):
        missing = names - set(b.env(service))
        problems += [f"{COMPOSE} {service}: {n} not configured" for n in sorted(missing)]
    serving_env = {item["name"] for d in b.k8s("Deployment", "pulse-serving") for k, v in walk(d) if k == "env"
                   for item in v}
    problems += [f"k8s pulse-serving: {n} not configured"
                 for n in sorted(SECRET_ENV_NAMES - SECURED_CLUSTER_SECRETS - serving_env)]
    return problems


# ------------------------------------------------------------------------------------------------
# Tests: the files as they are
# ------------------------------------------------------------------------------------------------
def test_settings_know_their_secrets() -> None:
    assert {"PULSE_REDIS_PASSWORD", "PULSE_SERVING_API_KEYS"} <= SECRET_ENV_NAMES
    assert "PULSE_KAFKA_BOOTSTRAP" in SETTING_ENV_NAMES and "PULSE_NOT_A_SETTING" not in SETTING_ENV_NAMES


def test_manifests_have_the_expected_shape(bundle: Bundle) -> None:
    services = bundle.services()
    assert {"kafka", "redis", "jobmanager", "taskmanager", "serving", "exporter", "prometheus", "grafana"} <= set(
        services)
    build = services["jobmanager"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).resolve() == (REPO_ROOT / DOCKERFILE).resolve()
    for volume in (v for svc in services.values() for v in svc.get("volumes", [])):
        source = volume.split(":")[0]
        if source.startswith("."):
            assert (INFRA / source).exists(), f"compose mounts missing {source}"
    kinds = {(d["apiVersion"], d["kind"]) for _, d in bundle.k8s_docs()}
    assert {("flink.apache.org/v1beta1", "FlinkDeployment"), ("apps/v1", "Deployment"), ("v1", "Service"),
            ("v1", "ConfigMap")} <= kinds
    kustomization = bundle.yaml(f"{K8S}/kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in (INFRA / "k8s").glob("*.yaml") if p.name != "kustomization.yaml")


def test_the_job_entry_point_is_pulse_job_run(bundle: Bundle) -> None:
    """Both clusters run `python -m pulse job run` through Flink's PythonDriver; that command exists."""
    import typer.main

    from pulse.cli import app

    job_group = typer.main.get_command(app).commands["job"]  # type: ignore[attr-defined]
    assert "run" in job_group.commands
    assert (REPO_ROOT / "pulse" / "__main__.py").is_file()
    compose_args = bundle.services()["jobmanager"]["command"]
    (deployment,) = bundle.k8s("FlinkDeployment")
    for args in (compose_args[compose_args.index("-pym"):], deployment["spec"]["job"]["args"]):
        assert args[:4] == ["-pym", "pulse", "job", "run"], args
    assert "org.apache.flink.client.python.PythonDriver" in (compose_args[2], deployment["spec"]["job"]["entryClass"])
    # The connector lands where flink_jobs.launch looks for it: <PULSE_HOME>/jars/flink.
    from infra.local.jars import jar_dir

    home = re.search(r"PULSE_HOME=(\S+)", bundle.texts[DOCKERFILE]).group(1)  # type: ignore[union-attr]
    assert f"{jar_dir(Path(home), 'flink')}/" in bundle.texts[DOCKERFILE]


def test_images_are_pinned(bundle: Bundle) -> None:
    assert image_problems(bundle) == []


def test_versions_agree_with_the_pins(bundle: Bundle) -> None:
    assert version_problems(bundle, project_pins()) == []


def test_ports_agree_with_settings_and_scrape_targets(bundle: Bundle) -> None:
    assert port_problems(bundle) == []


def test_every_pulse_variable_is_a_setting(bundle: Bundle) -> None:
    assert env_name_problems(bundle) == []


def test_no_secret_is_written_in_a_file(bundle: Bundle) -> None:
    assert secret_problems(bundle) == []


# ------------------------------------------------------------------------------------------------
# Tests: every check fails on a file that is wrong
# ------------------------------------------------------------------------------------------------
MUTATIONS: list[tuple[str, str, str, str, Callable[[Bundle], list[str]]]] = [
    # (id, file, old text, new text, check)
    ("image-latest", COMPOSE, "image: redis:7.2.7-alpine", "image: redis:latest", image_problems),
    ("image-untagged", f"{K8S}/serving.yaml", "image: pulse:0.1.0", "image: pulse", image_problems),
    ("image-floating", DOCKERFILE, "ARG FLINK_IMAGE=flink:2.2.1-java17", "ARG FLINK_IMAGE=flink:2.2-java17",
     image_problems),
    ("flink-version", DOCKERFILE, "ARG FLINK_IMAGE=flink:2.2.1-java17", "ARG FLINK_IMAGE=flink:2.1.1-java17",
     lambda b: version_problems(b, project_pins())),
    ("kafka-version", COMPOSE, "image: apache/kafka:4.2.0", "image: apache/kafka:4.1.1",
     lambda b: version_problems(b, project_pins())),
    ("connector-from-pom", DOCKERFILE, "-Pflink -Djars.dir", "-Pkafka -Djars.dir",
     lambda b: version_problems(b, project_pins())),
    ("operator-flink-version", f"{K8S}/flink-deployment.yaml", "flinkVersion: v2_2", "flinkVersion: v2_1",
     lambda b: version_problems(b, project_pins())),
    ("pulse-image-version", f"{K8S}/exporter.yaml", "image: pulse:0.1.0", "image: pulse:0.0.9",
     lambda b: version_problems(b, project_pins())),
    ("serving-port", COMPOSE, '"8080:8080"', '"8080:8000"', port_problems),
    ("k8s-serving-port", f"{K8S}/configmap.yaml", 'PULSE_SERVING_PORT: "8080"', 'PULSE_SERVING_PORT: "8000"',
     port_problems),
    ("metrics-port", COMPOSE, "metrics.reporter.prom.port: 9249", "metrics.reporter.prom.port: 9251", port_problems),
    ("k8s-metrics-port", f"{K8S}/flink-deployment.yaml", 'metrics.reporter.prom.port: "9249"',
     'metrics.reporter.prom.port: "9999"', port_problems),
    ("exporter-port", f"{K8S}/exporter.yaml", "containerPort: 9250", "containerPort: 9251", port_problems),
    ("kafka-port", COMPOSE, "HOST://:9092,", "HOST://:9094,", port_problems),
    ("redis-port", f"{K8S}/configmap.yaml", "redis://pulse-redis:6379/0", "redis://pulse-redis:6380/0", port_problems),
    ("scrape-target", LOCAL_PROMETHEUS, '"127.0.0.1:9250"', '"127.0.0.1:9350"', port_problems),
    ("compose-scrape-target", COMPOSE_PROMETHEUS, '"exporter:9250"', '"exporter:9350"', port_problems),
    ("compose-scrape-host", COMPOSE_PROMETHEUS, '"exporter:9250"', '"pulse-exporter:9250"', port_problems),
    ("k8s-serving-unscraped", f"{K8S}/serving.yaml", 'prometheus.io/port: "8080"', 'prometheus.io/port: "9090"',
     port_problems),
    ("serving-scrape-target", LOCAL_PROMETHEUS, '"127.0.0.1:8080"', '"127.0.0.1:8000"', port_problems),
    ("compose-serving-scrape", COMPOSE_PROMETHEUS, '"serving:8080"', '"serving:8000"', port_problems),
    ("compose-serving-unscraped", COMPOSE_PROMETHEUS, "  - job_name: pulse-serving", "  - job_name: pulse-api",
     port_problems),
    ("unknown-env", COMPOSE, "PULSE_PARTITIONS:", "PULSE_PARTITION_COUNT:", env_name_problems),
    ("unknown-env-k8s", f"{K8S}/configmap.yaml", "PULSE_STATE_BACKEND:", "PULSE_STATEBACKEND:", env_name_problems),
    ("literal-password", COMPOSE, "PULSE_REDIS_PASSWORD: ${PULSE_REDIS_PASSWORD:?set PULSE_REDIS_PASSWORD in "
     "infra/.env or the environment}", "PULSE_REDIS_PASSWORD: hunter2", secret_problems),
    ("defaulted-password", COMPOSE, "${PULSE_SERVING_API_KEYS:?", "${PULSE_SERVING_API_KEYS:-k1}${X:?",
     secret_problems),
    ("grafana-password", COMPOSE, "GF_SECURITY_ADMIN_PASSWORD: ${GRAFANA_ADMIN_PASSWORD:?set GRAFANA_ADMIN_PASSWORD "
     "in infra/.env or the environment}", "GF_SECURITY_ADMIN_PASSWORD: admin", secret_problems),
    ("k8s-literal-secret", f"{K8S}/serving.yaml", """            - name: PULSE_SERVING_API_KEYS
              valueFrom:
                secretKeyRef:
                  name: pulse-secrets
                  key: PULSE_SERVING_API_KEYS""", """            - name: PULSE_SERVING_API_KEYS
              value: key-1""", secret_problems),
    ("k8s-secret-in-configmap", f"{K8S}/configmap.yaml", "  PULSE_PARTITIONS:", '  PULSE_REDIS_PASSWORD: "x"\n'
     "  PULSE_PARTITIONS:", secret_problems),
    ("password-in-url", f"{K8S}/configmap.yaml", "redis://pulse-redis:6379/0", "redis://:pw@pulse-redis:6379/0",
     secret_problems),
    ("secret-in-image", DOCKERFILE, "ARG MAVEN_IMAGE", "ENV PULSE_REDIS_PASSWORD=x\nARG MAVEN_IMAGE",
     secret_problems),
    ("secret-dropped", f"{K8S}/serving.yaml", "name: PULSE_SERVING_API_KEYS", "name: PULSE_SERVING_API_KEY_FILE",
     secret_problems),
]


@pytest.mark.parametrize(("path", "old", "new", "check"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_each_check_catches_a_wrong_file(
    bundle: Bundle, path: str, old: str, new: str, check: Callable[[Bundle], list[str]]
) -> None:
    assert old in bundle.texts[path], f"mutation no longer applies to {path}: {old!r}"
    mutated = Bundle({**bundle.texts, path: bundle.texts[path].replace(old, new, 1)})
    assert check(mutated), f"{check.__name__} missed {old!r} -> {new!r} in {path}"
