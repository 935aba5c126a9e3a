"""The browser SDK's own tests (tests/unit/serving/sdk, node's test runner) run as part of pytest."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SDK_TESTS = Path(__file__).resolve().parent / "sdk" / "pulse.test.mjs"


def test_the_sdk_passes_its_node_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (infra/setup.sh installs it: apt-get install nodejs)")
    run = subprocess.run([node, "--test", str(SDK_TESTS)], capture_output=True, text=True, timeout=120)
    passed = re.search(r"^# pass (\d+)$", run.stdout, re.MULTILINE)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert passed is not None and int(passed.group(1)) >= 11, run.stdout[-2000:]
    assert re.search(r"^# fail 0$", run.stdout, re.MULTILINE)
