"""The job's options: thread mode only (process mode is refused with one line), extra Flink options by setting."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from config import Settings
from flink_jobs.launch import job_options
from flink_jobs.runtime import runtime_options
from pulse.cli import app


@pytest.mark.parametrize("command", [["job", "run"], ["job", "submit"]])
def test_process_mode_is_refused_with_one_line(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_PYTHON_EXECUTION_MODE", "process")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 1
    assert "thread mode only" in result.output and "Traceback" not in result.output


def test_the_job_options_refuse_process_mode() -> None:
    with pytest.raises(ValueError, match="thread mode only"):
        job_options(Settings(python_execution_mode="process"), jars=[], restore_from=None)
    assert job_options(Settings(), jars=[], restore_from=None).execution_mode == "thread"


def test_extra_flink_options_reach_the_job_and_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_JOB_FLINK_CONF", '{"taskmanager.network.memory.buffer-debloat.enabled": "true", '
                                              '"parallelism.default": "3"}')
    config = runtime_options(job_options(Settings(), jars=[], restore_from=None))
    assert config["taskmanager.network.memory.buffer-debloat.enabled"] == "true"
    assert config["parallelism.default"] == "3"  # the user's option wins over Pulse's own
