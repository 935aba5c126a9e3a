"""infra/observability: the Prometheus config, alert rules and dashboard parse and name real metrics.

Whether every referenced name is present in a real scrape is checked by
tests/integration/test_lag.py (it needs the running job); here: the files are well-formed, each
rule has what Alertmanager and the README need, and every ``pulse_*`` name is one the exporter
or the serving shim (``serving/metrics.py``) publishes; the shim is scraped and has its panels.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from config import REPO_ROOT, Settings
from pulse.experiment_results import METRIC_NAMES as EXPERIMENT_METRIC_NAMES
from pulse.lag import METRIC_NAMES
from serving.metrics import Metrics

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


def serving_metric_names() -> set[str]:
    """The series names ``/metrics`` of the serving shim can carry (a histogram's _bucket/_count/_sum...)."""
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "counter": ("_total",)}
    return {f"{family.name}{suffix}" for family in Metrics().registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


def test_pulse_metric_names_are_ones_the_exporter_or_serving_publishes() -> None:
    published = set(METRIC_NAMES) | set(EXPERIMENT_METRIC_NAMES) | serving_metric_names()
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


def test_prometheus_config_scrapes_job_exporter_and_serving() -> None:
    config = yaml.safe_load((INFRA / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"pulse-job", "pulse-exporter", "pulse-serving"} <= set(jobs)
    assert "alerts.yml" in config["rule_files"]
    targets = [t for job in jobs.values() for sc in job["static_configs"] for t in sc["targets"]]
    assert any(t.endswith(":9249") for t in targets) and any(t.endswith(":9250") for t in targets)
    serving = jobs["pulse-serving"]
    assert serving.get("metrics_path", "/metrics") == "/metrics"
    assert [t for sc in serving["static_configs"] for t in sc["targets"]] == [f"127.0.0.1:{Settings().serving_port}"]


def test_dashboard_has_a_serving_panel_for_each_question() -> None:
    """Requests/s, p50 and p99 latency, errors by reason, 503s while Redis is down: from the shim's names."""
    exprs = [target["expr"] for target in _targets(load_dashboard())]
    served = serving_metric_names()

    def any_expr(*needles: str) -> bool:
        return any(all(n in e for n in needles) and metric_names(e) & served for e in exprs)

    assert any_expr("rate(pulse_serving_request_duration_seconds_count"), "requests / s"
    assert any_expr("histogram_quantile(0.5,", "pulse_serving_request_duration_seconds_bucket"), "p50"
    assert any_expr("histogram_quantile(0.99,", "pulse_serving_request_duration_seconds_bucket"), "p99"
    assert any_expr("pulse_serving_errors_total", "by (reason)"), "errors by reason"
    assert any_expr('status="503"'), "503s"
    assert any_expr('reason="redis_unavailable"'), "Redis down"


def test_dashboard_shows_experiment_ctr_by_variant() -> None:
    panels = {panel["title"]: panel for panel in load_dashboard()["panels"]}
    exprs = [target["expr"] for target in panels["Experiment CTR by variant"]["targets"]]
    assert any(metric_names(e) == set(EXPERIMENT_METRIC_NAMES) and 'outcome="clicked"' in e
               and "by (experiment, variant)" in e for e in exprs), exprs


def test_readme_explains_every_alert() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "## Operating Pulse" in readme
    section = readme.split("## Operating Pulse", 1)[1]
    for group in load_rules()["groups"]:
        for rule in group["rules"]:
            assert rule["alert"] in section, rule["alert"]
    for name in (*METRIC_NAMES, *EXPERIMENT_METRIC_NAMES):
        assert name in section, name

