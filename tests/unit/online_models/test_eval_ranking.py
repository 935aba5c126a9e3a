"""``pulse eval mf --metric ranking`` on small data: one table per data set, every learner and baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from pulse.commands.eval_mf import mf
from tests.unit.online_models.obd_sample import write_sample

app = typer.Typer()
app.command()(mf)

MODELS = {"popularity", "co-occurrence", "MF (explicit)", "implicit BPR", "implicit WMF"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shared")
    write_sample(folder / "obd")
    otto = folder / "otto"
    otto.mkdir()
    t0 = 1_659_304_800_000
    events = [{"aid": a, "ts": t0 + 1_000 * n, "type": "clicks"} for n, a in enumerate([1, 2, 1, 3, 2, 1])]
    (otto / "sample.jsonl").write_text(json.dumps({"session": 0, "events": events}) + "\n")
    return folder


def test_json_has_every_model_on_every_data_set(shared: Path) -> None:
    args = ["--metric", "ranking", "--limit", "2000", "--k", "5", "--shared-data", str(shared), "--json"]
    args.append("--no-progress")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"planted", "synthetic", "obd", "otto"}
    for name, table in out.items():
        assert set(table) == MODELS, name
    obd = out["obd"]["popularity"]
    assert (obd["n"], obd["repeats"]) == (2, 2)  # four clicks; two users click again what their session saw
    otto = out["otto"]["popularity"]
    assert (otto["n"], otto["repeats"]) == (3, 3)  # items 1, 2, 3 judged; the returns to 1, 2, 1 are repeats
    planted = out["planted"]
    assert 0 < planted["popularity"]["hit_rate"] < 1 and planted["implicit BPR"]["us_per_event"] > 0


def test_text_table_and_bad_data_set(shared: Path) -> None:
    base = ["--metric", "ranking", "--limit", "1000", "--shared-data", str(shared), "--no-progress"]
    result = CliRunner().invoke(app, [*base, "--data", "planted"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("data: planted (") and "HR@10" in result.stdout
    assert all(name in result.stdout for name in MODELS)
    assert CliRunner().invoke(app, [*base, "--data", "movies"]).exit_code == 2
    assert CliRunner().invoke(app, [*base, "--data", "obd", "--shared-data", str(shared / "none")]).exit_code == 2
