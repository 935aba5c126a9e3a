"""`--restore latest`: a job restores its own checkpoints, never another job's of the same home."""

from __future__ import annotations

import os
from pathlib import Path

from config import Settings
from flink_jobs.launch import restore_latest


def _checkpoint(folder: Path, age_s: float) -> Path:
    (folder / "_metadata").parent.mkdir(parents=True)
    (folder / "_metadata").write_bytes(b"")
    stamp = 1_700_000_000 - age_s
    os.utime(folder, (stamp, stamp))
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
