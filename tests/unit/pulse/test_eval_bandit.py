"""``pulse eval bandit`` on a hand-checked 5-row log and, when present, the shared OBD sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from online_models.bandits import LinUCB
from online_models.off_policy import logged_rows
from producers.sources.obd import read_obd
from pulse.cli import app
from tests.unit.online_models.obd_sample import EXPECTED_IPW, EXPECTED_SNIPS, write_sample


def test_ipw_of_epsilon_greedy_on_the_hand_computed_log(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    args = ["eval", "bandit", "--data", f"obd:{path}", "--policy", "egreedy", "--epsilon", "0.2", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["logged"] == {"clicks": 4.0, "impressions": 5, "ctr": 0.8}
    assert out["ipw"]["value"] == pytest.approx(EXPECTED_IPW, rel=1e-12)  # 0.665, worked out in obd_sample.py
    assert out["snips"]["value"] == pytest.approx(EXPECTED_SNIPS, rel=1e-12)


def test_text_output_and_bad_data(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    result = CliRunner().invoke(app, ["eval", "bandit", "--data", f"obd:{path}", "--policy", "linucb"])
    assert result.exit_code == 0, result.output
    assert "logged policy CTR: 4 clicks / 5 = 80.00%" in result.stdout
    assert "IPW" in result.stdout and "SNIPS" in result.stdout and "DR" in result.stdout
    result = CliRunner().invoke(app, ["eval", "bandit", "--data", str(path)])
    assert result.exit_code == 2
    assert "obd:PATH" in result.output


@pytest.mark.slow
def test_thompson_sampling_on_men_random(shared_data: Path) -> None:
    path = shared_data / "obd" / "random" / "men" / "men.csv"
    args = ["eval", "bandit", "--data", f"obd:{path}", "--policy", "ts", "--n-draws", "100", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["logged"] == {"clicks": 46.0, "impressions": 10_000, "ctr": 0.0046}
    for name in ("ipw", "snips", "dr"):
        assert out[name]["low"] < out[name]["value"] < out[name]["high"]
        assert 0.0 < out[name]["value"] < 0.05


def test_decide_prints_the_replayed_linucbs_decision_per_request(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    requests = [{"request_id": "0123456789abcdef0123456789abcdef", "context": {"position": "1"}},
                {"seed": 5, "context": {"position": "2"}, "arms": ["new1", "new2"]}]
    decide = tmp_path / "decide.jsonl"
    decide.write_text("".join(json.dumps(r) + "\n" for r in requests))
    args = ["eval", "bandit", "--data", f"obd:{path}", "--policy", "linucb", "--order", "file", "--json",
            "--decide", str(decide)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)["decisions"]
    learner = LinUCB(features=["user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3", "position"])
    for row in logged_rows(read_obd(path)):
        learner.update(row.arm, row.reward, row.context)
    first = learner.decide(sorted(learner.known_arms()), {"position": "1"}, 0x0123456789ABCDEF0123456789ABCDEF % 2**64)
    assert (got[0]["arm"], got[0]["propensity"]) == (first.arm, first.propensity)
    assert got[1]["seed"] == 5 and got[1]["propensity"] == 0.5 and got[1]["arm"] in ("new1", "new2")
    wrong = CliRunner().invoke(app, [*args[:4], "--policy", "ts", "--decide", str(decide)])
    assert wrong.exit_code == 2 and "--decide needs --policy linucb" in wrong.output
