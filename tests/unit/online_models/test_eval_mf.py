from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pulse.commands.eval_mf import mf
from tests.unit.online_models.synthetic_ratings import write_udata

pytest.importorskip("producers.sources.movielens")

app = typer.Typer()
app.command()(mf)


@pytest.fixture(scope="module")
def udata(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_udata(tmp_path_factory.mktemp("ml") / "u.data", n=3_000, seed=1)


def test_json_echoes_params_and_compares_with_river(udata: Path) -> None:
    args = ["--data", f"movielens:{udata}", "--factors", "6", "--bias-lr", "0.02", "--latent-lr", "0.03",
            "--l2-bias", "0.01", "--l2-latent", "0.02", "--init-mu", "0.0", "--init-sigma", "0.05",
            "--clip-gradient", "10", "--seed", "4", "--repeats", "1", "--no-progress", "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["n"] == 3_000
    assert out["params"] == {
        "n_factors": 6, "bias_lr": 0.02, "latent_lr": 0.03, "l2_bias": 0.01, "l2_latent": 0.02,
        "init_mu": 0.0, "init_sigma": 0.05, "clip_gradient": 10.0, "seed": 4,
    }  # fmt: skip
    for model in ("pulse", "river"):
        assert 0.5 < out[model]["rmse"] < 1.5 and 0.3 < out[model]["mae"] < 1.2
        assert out[model]["us_per_event"] > 0 and out[model]["learn_only_us_per_event"] > 0
    assert abs(out["ratio"]["rmse"] - 1) < 0.05
    kalman = out["kalman"]
    assert 0.5 < kalman["rmse"] < 1.5 and kalman["learn_only_us_per_event"] > 0
    assert out["kalman_ratio"]["rmse"] == pytest.approx(kalman["rmse"] / out["river"]["rmse"])


def test_no_compare_and_text_output(udata: Path) -> None:
    result = CliRunner().invoke(
        app, ["--data", f"movielens:{udata}", "--no-compare", "--no-progress", "--repeats", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "pulse MF" in result.stdout and "river" not in result.stdout.split("params")[0]
    assert "river BiasedMF" not in result.stdout
    assert "pulse KalmanMF" in result.stdout and "kalman vs river" not in result.stdout


def test_kalman_row_beside_river_and_no_kalman(udata: Path) -> None:
    args = ["--data", f"movielens:{udata}", "--no-progress", "--repeats", "1"]
    lines = CliRunner().invoke(app, args).stdout.splitlines()
    rows = {line[:16].strip(): line[16:].split() for line in lines if line[:16].strip()}
    assert {"pulse MF", "river BiasedMF", "pulse KalmanMF", "kalman vs river"} <= rows.keys()
    ratio = float(rows["kalman vs river"][0].rstrip("%")) / 100
    assert ratio == pytest.approx(float(rows["pulse KalmanMF"][0]) / float(rows["river BiasedMF"][0]) - 1, abs=2e-4)
    result = CliRunner().invoke(app, [*args, "--no-kalman"])
    assert result.exit_code == 0 and "KalmanMF" not in result.stdout and "kalman" not in result.stdout


def test_bad_data_spec_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--data", str(tmp_path / "u.data")])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["--data", f"movielens:{tmp_path / 'missing'}"])
    assert result.exit_code == 2
