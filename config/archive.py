"""Settings of the event archive (``pulse archive run|verify``, ``pulse backfill``; README "Archive and backfill").

:class:`config.Settings` inherits them, like the connection settings.

>>> s = ArchiveSettings(archive_flush_events=1000)
>>> s.archive_group_id, s.archive_flush_events
('pulse-archive', 1000)
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArchiveSettings(BaseSettings):
    """Where the archive goes and how often the archive job commits its files. Env prefix: ``PULSE_``."""

    model_config = SettingsConfigDict(env_prefix="PULSE_", extra="forbid", frozen=True)

    archive_dir: Path | None = Field(None, description="Parquet archive of the events topic; default <home>/archive")
    archive_group_id: str = Field("pulse-archive", description="Consumer group the archive job commits offsets under")
    # Unused since the archive is a Flink job (ADR 0011), which commits on checkpoints; kept so env files load.
    archive_flush_events: int = Field(100_000, ge=1, description="Unused (the archive job commits on checkpoints)")
    # A file per hour per checkpoint: rarer checkpoints mean fewer, larger files.
    archive_flush_s: float = Field(300.0, gt=0, description="The archive job's checkpoint interval: its files are "
                                   "committed this often")
