"""`--restore latest`: a job restores its own checkpoints, never another job's of the same home."""

from __future__ import annotations

import os
from pathlib import Path

from config import Settings
from flink_jobs.launch import latest_checkpoint, restore_latest


def _checkpoint(folder: Path, age_s: float) -> Path:
    """A completed checkpoint whose ``_metadata`` was written ``age_s`` before a fixed time."""
    (folder / "_metadata").parent.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"")
    stamp = 1_700_000_000 - age_s
    os.utime(folder / "_metadata", (stamp, stamp))
    return folder


def test_each_job_name_restores_from_its_own_folder(tmp_path: Path) -> None:
    live = Settings(checkpoint_dir=tmp_path, job_name="live")
    other = Settings(checkpoint_dir=tmp_path, job_name="other")
    mine = _checkpoint(live.checkpoint_path() / "a1" / "chk-7", age_s=100)
    newer_elsewhere = _checkpoint(other.checkpoint_path() / "b2" / "chk-3", age_s=1)
    assert restore_latest(live) == (mine, None)
    assert restore_latest(other) == (newer_elsewhere, None)
    assert restore_latest(Settings(checkpoint_dir=tmp_path, job_name="new")) == (None, None)


def test_an_empty_folder_falls_back_to_the_old_shared_layout_with_a_warning(tmp_path: Path) -> None:
    settings = Settings(checkpoint_dir=tmp_path, job_name="live")
    old = _checkpoint(tmp_path / "f00d" / "chk-12", age_s=10)
    path, warning = restore_latest(settings)
    assert path == old
    assert warning is not None and str(old) in warning and "--restore none" in warning
    mine = _checkpoint(settings.checkpoint_path() / "a1" / "chk-1", age_s=500)  # older, but its own: preferred
    assert restore_latest(settings) == (mine, None)


def test_a_checkpoint_half_discarded_when_the_job_was_killed_is_not_the_newest(tmp_path: Path) -> None:
    # Seen after a kill: chk-35 completed, then Flink began deleting the subsumed chk-34's files
    # (which made chk-34's folder the newer one) and the process died with one file left.
    job = tmp_path / "6bf0"
    subsumed = _checkpoint(job / "chk-34", age_s=4.7)
    (subsumed / "state-left").write_bytes(b"x")
    newest = _checkpoint(job / "chk-35", age_s=0.0)
    os.utime(newest, (1_700_000_000, 1_700_000_000))
    os.utime(subsumed, (1_700_000_001, 1_700_000_001))  # the discard touched the folder last
    assert latest_checkpoint(tmp_path) == newest
    os.utime(subsumed / "_metadata", (1_700_000_000, 1_700_000_000))  # same time (a coarse clock): the higher N
    assert latest_checkpoint(tmp_path) == newest
