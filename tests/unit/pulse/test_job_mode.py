"""The job's batched stages need thread mode: process mode is refused with one line, before anything starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from config import Settings
from flink_jobs.launch import job_options
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
