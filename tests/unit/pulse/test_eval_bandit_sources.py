"""``pulse eval bandit``: ``--policy logged``, ``--reward``, and ``kafka:`` without a broker (no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from infra.local.process import free_port
from online_models.bandits import BanditScope
from online_models.off_policy import evaluate_logging_policy, join_decisions
from pulse.cli import app
from pulse.commands.eval_bandit import PolicyName, _print_report, _Run
from schemas.events import Decision, Event, EventType
from tests.unit.online_models.obd_sample import write_sample


def test_the_logging_policy_on_the_obd_sample_is_its_ctr(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    result = CliRunner().invoke(app, ["eval", "bandit", "--data", f"obd:{path}", "--policy", "logged", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["logged"] == {"clicks": 4.0, "impressions": 5, "ctr": 0.8}
    assert out["logged_by"] == {"random": 5}
    assert out["join"]["rewarded"] == 4 and out["join"]["unknown_decision"] == 0
    assert out["policy"]["name"] == "logged" and out["policy"]["hyperparameters"] == {}
    for name in ("ipw", "snips", "dr"):
        assert out[name]["value"] == 0.8
        assert out[name]["low"] < 0.8 < out[name]["high"]
    text = CliRunner().invoke(app, ["eval", "bandit", "--data", f"obd:{path}", "--policy", "logged"])
    assert text.exit_code == 0, text.output
    assert "logged policy CTR: 4 clicks / 5 = 80.00%" in text.stdout
    assert "The logging policy itself" in text.stdout and "80.000%" in text.stdout


def test_reward_types_are_checked(tmp_path: Path) -> None:
    path = write_sample(tmp_path)
    ok = CliRunner().invoke(app, ["eval", "bandit", "--data", f"obd:{path}", "--policy", "logged",
                                  "--reward", "click,purchase"])
    assert ok.exit_code == 0, ok.output
    assert "4 rewarded / 5" in ok.stdout
    bad = CliRunner().invoke(app, ["eval", "bandit", "--data", f"obd:{path}", "--reward", "view"])
    assert bad.exit_code == 2
    assert "--reward takes event types among click, add_to_cart, purchase, got 'view'" in bad.output


def test_kafka_data_without_a_broker_is_one_line(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(
        app, ["--kafka-bootstrap", address, "eval", "bandit", "--data", "kafka:events", "--policy", "logged"],
        env={"PULSE_HOME": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: cannot reach Kafka at {address} (PULSE_KAFKA_BOOTSTRAP)"
    ]
    bad = CliRunner().invoke(app, ["eval", "bandit", "--data", "kafka:"])
    assert bad.exit_code == 2 and "kafka:TOPIC" in bad.output


def test_text_report_of_a_topic_shows_the_join(capsys: pytest.CaptureFixture[str]) -> None:
    def impression(i: int, policy: str) -> Event:
        return Event(event_id=f"e{i}", type=EventType.IMPRESSION, user_id="u", item_id="a", event_time_ms=i,
                     decision=Decision(request_id=f"r{i}", policy=policy, arm="a", propensity=0.5))

    def click(request_id: str) -> Event:
        return Event(event_id=f"c-{request_id}", type=EventType.CLICK, user_id="u", item_id="a", event_time_ms=9,
                     context={"request_id": request_id})

    log = join_decisions([impression(0, "ts"), impression(1, "uniform"), impression(1, "ts"), click("r0"),
                          click("r9")])
    run = _Run("kafka:events", PolicyName.LOGGED, BanditScope.GLOBAL, 0, {}, 1, ["click"], log, undecodable=2)
    _print_report(run, evaluate_logging_policy(log.rows))
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        "data: kafka:events (2 decisions logged by 'ts' (1), 'uniform' (1), 1 arms)",
        "join by request id (click = reward 1): 1 decisions rewarded by 1 events; ignored: 1 naming no logged "
        "decision, 0 naming none, 1 repeated impressions, 2 undecodable records",
        "logged policy CTR: 1 clicks / 2 = 50.00%",
        "The logging policy itself (w = 1; DR's direct term at the logged arm), estimated CTR:",
    ]
    assert lines[4].split()[:2] == ["IPW", "50.000%"]
