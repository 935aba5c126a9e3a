from __future__ import annotations

from pathlib import Path

import pytest

from config import Settings


def test_archive_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_ARCHIVE_DIR", "/data/archive")
    monkeypatch.setenv("PULSE_ARCHIVE_FLUSH_EVENTS", "500")
    settings = Settings()
    assert settings.archive_dir == Path("/data/archive") and settings.archive_flush_events == 500
    assert Settings(**{k.removeprefix("PULSE_").lower(): v for k, v in settings.to_env().items()
                       if k.startswith("PULSE_ARCHIVE")}).archive_flush_events == 500
