"""A real headless Chromium (Debian's ``chromium`` package, installed by infra/setup.sh), driven by its CLI.

``dump_dom`` prints the DOM after the page's scripts ran (``--virtual-time-budget`` lets the page's
fetches and timers finish first); ``screenshot`` writes a PNG. Each run has a fresh profile.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # git-ignored; CI keeps them


def chromium() -> str:
    """The browser binary; fails (not skips) when setup did not install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("chromium is not installed (infra/setup.sh installs it: apt-get install chromium)")
    return found


def _run(url: str, *flags: str, budget_ms: int, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="pulse-chromium-") as profile:
        command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
                   f"--virtual-time-budget={budget_ms}", *flags, url]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)


def dump_dom(url: str, budget_ms: int = 10_000) -> str:
    """The serialized DOM of ``url`` once its scripts had ``budget_ms`` of (virtual) time."""
    run = _run(url, "--dump-dom", budget_ms=budget_ms)
    assert run.returncode == 0 and "<html" in run.stdout, run.stderr[-3000:]
    return run.stdout


def screenshot(url: str, name: str, budget_ms: int = 10_000, size: str = "1100,800") -> Path:
    """A PNG of ``url`` under tests/integration/artifacts/``name``."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    path.unlink(missing_ok=True)
    run = _run(url, f"--screenshot={path}", f"--window-size={size}", budget_ms=budget_ms)
    assert run.returncode == 0 and path.exists() and path.stat().st_size > 1000, run.stderr[-3000:]
    return path
