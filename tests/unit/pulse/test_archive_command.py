"""Where `pulse archive` writes and what a backfill's job writes to: never where the live job does."""

from __future__ import annotations

from pathlib import Path

from config import Settings
from pulse.commands.archive import archive_root, backfill_settings


def test_archive_root_defaults_under_home(tmp_path: Path) -> None:
    assert archive_root(Settings(home=tmp_path)) == (tmp_path / "archive").resolve()
    assert archive_root(Settings(home=tmp_path, archive_dir=tmp_path / "a")) == (tmp_path / "a").resolve()


def test_a_backfill_writes_nowhere_the_live_job_does() -> None:
    live = Settings()
    target = backfill_settings(live, "pulse-v2")
    names = ("topic_events", "topic_sessions", "topic_dlq", "topic_item_params", "job_group_id", "job_name",
             "redis_prefix")
    assert all(getattr(target, name) != getattr(live, name) for name in names)
    assert target.checkpoint_path() != live.checkpoint_path()
    assert target.topic_items == live.topic_items  # the catalogue is shared, read by the backfill's own group


def test_the_live_job_never_restores_a_backfills_checkpoint(tmp_path: Path) -> None:
    from flink_jobs.launch import latest_checkpoint

    live = Settings(checkpoint_dir=tmp_path / "chk")
    backfill_chk = backfill_settings(live, "pulse-v2").checkpoint_path() / "job-1" / "chk-3"
    backfill_chk.mkdir(parents=True)
    (backfill_chk / "_metadata").write_bytes(b"")
    assert latest_checkpoint(live.checkpoint_path()) is None
    assert latest_checkpoint(backfill_settings(live, "pulse-v2").checkpoint_path()) == backfill_chk
