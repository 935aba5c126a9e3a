"""``pulse experiments list``: the experiments serving runs, and each user's variant as serving assigns it."""

from __future__ import annotations

import json

import orjson
import pytest
from typer.testing import CliRunner

from config.experiments import parse_experiments
from pulse.cli import app

RECS = [{"name": "home-recs", "surface": "recommendations",
         "variants": [{"name": "A", "policy": "mf", "share": 0.45},
                      {"name": "B", "policy": "popularity", "share": 0.45}]}]
USERS = [f"u{i}" for i in range(30)]


def test_users_get_the_variants_serving_assigns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_EXPERIMENTS", json.dumps(RECS))
    result = CliRunner().invoke(app, ["experiments", "list", "--json", *(a for u in USERS for a in ("-u", u))])
    assert result.exit_code == 0, result.output
    rows = orjson.loads(result.stdout)
    (recs,) = parse_experiments(json.dumps(RECS))
    assert [r["name"] for r in rows] == ["home-recs", "bandit-v1"]  # and the control-share split of decisions
    assert rows[0]["users"] == {u: (v.name if (v := recs.assign(u)) else None) for u in USERS}
    assert set(rows[0]["users"].values()) == {"A", "B", None}
    assert set(rows[1]["users"].values()) <= {"control", "treatment"} and rows[1]["salt"] == "pulse"
    text = CliRunner().invoke(app, ["experiments", "list", "-u", "u1"]).stdout
    assert "home-recs (recommendations, salt 'home-recs'): A=mf 45%, B=popularity 45%, outside 10%" in text


@pytest.mark.parametrize(("args", "needle"), [
    (["nope"], "no experiment 'nope' in PULSE_EXPERIMENTS (defined: home-recs, bandit-v1)"),
    (["home-recs", "--control", "C"], "--control 'C' is not a variant of 'home-recs' (A, B)"),
    (["home-recs", "--outcome", "viewed"], "--outcome 'viewed': one of clicked, carted, purchased"),
])
def test_report_of_a_bad_name_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch, args: list[str],
                                                      needle: str) -> None:
    # Checked before Redis is asked: the URL points nowhere.
    monkeypatch.setenv("PULSE_EXPERIMENTS", json.dumps(RECS))
    monkeypatch.setenv("PULSE_REDIS_URL", "redis://127.0.0.1:1/0")
    result = CliRunner().invoke(app, ["experiments", "report", *args])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {needle}"]
