"""infra/observability: the Prometheus config, alert rules and dashboard parse and name real metrics.

Whether every referenced name is present in a real scrape is checked by
tests/integration/test_lag.py (it needs the running job); here: the files are well-formed, each
rule has what Alertmanager and the README need, and every ``pulse_*`` name is one the exporter
publishes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from config import REPO_ROOT
from pulse.lag import METRIC_NAMES

INFRA = REPO_ROOT / "infra" / "observability"
_METRIC = re.compile(r"\b(?:pulse|flink)_[A-Za-z0-9_:]+\b")


def load_rules() -> Any:
    return yaml.safe_load((INFRA / "alerts.yml").read_text())


def load_dashboard() -> Any:
    return json.loads((INFRA / "grafana-dashboard.json").read_text())


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (all of ours start with ``pulse_`` or ``flink_``)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)  # label values are not metric names
    return set(_METRIC.findall(without_strings))


def metric_names_in_rules(rules: Any) -> set[str]:
    return {name for group in rules["groups"] for rule in group["rules"] for name in metric_names(rule["expr"])}


def _targets(dashboard: Any) -> list[dict[str, Any]]:
    panels = list(dashboard["panels"])
    for panel in dashboard["panels"]:
        panels += panel.get("panels", [])
    return [target for panel in panels for target in panel.get("targets", [])]


def metric_names_in_dashboard(dashboard: Any) -> set[str]:
    names = {name for target in _targets(dashboard) for name in metric_names(target["expr"])}
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, dict) else str(query or "")
        names |= metric_names(text)
    return names


def test_metric_names_ignore_label_values() -> None:
    expr = 'sum by (partition) (pulse_lag_seconds{topic="flink_x"}) > on() flink_jobmanager_job_numRestarts'
    assert metric_names(expr) == {"pulse_lag_seconds", "flink_jobmanager_job_numRestarts"}


def test_alert_rules_are_complete() -> None:
    rules = load_rules()
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {rule["alert"] for rule in alerts}
    assert {"PulseLagHigh", "PulseScoresStale", "PulseDeadLettersRate", "PulseJobRestarting"} <= names
    for rule in alerts:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["runbook"], rule["alert"]
        assert "Operating Pulse" in rule["annotations"]["runbook"]
        assert metric_names(rule["expr"]), rule["alert"]


def test_pulse_metric_names_are_ones_the_exporter_publishes() -> None:
    published = set(METRIC_NAMES)
    referenced = metric_names_in_rules(load_rules()) | metric_names_in_dashboard(load_dashboard())
    ours = {name for name in referenced if name.startswith("pulse_")}
    assert ours <= published, sorted(ours - published)
    flink = {name for name in referenced if name.startswith("flink_")}
    assert flink, "the dashboard shows the job's own metrics too"


def test_dashboard_is_importable_json() -> None:
    dashboard = load_dashboard()
    assert dashboard["title"] and dashboard["uid"]
    targets = _targets(dashboard)
    assert targets and all(target["expr"] for target in targets)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_prometheus_config_scrapes_job_and_exporter() -> None:
    config = yaml.safe_load((INFRA / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"pulse-job", "pulse-exporter"} <= set(jobs)
    assert "alerts.yml" in config["rule_files"]
    targets = [t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]]
    assert any(t.endswith(":9249") for t in targets) and any(t.endswith(":9250") for t in targets)


def test_readme_explains_every_alert() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Operating Pulse" in readme
    section = readme.split("## Operating Pulse", 1)[1]
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in section, rule["alert"]
    for name in METRIC_NAMES:
        assert name in section, name

