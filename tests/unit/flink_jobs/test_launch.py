"""`--restore latest`: a job restores its own checkpoints, never another job's of the same home."""

from __future__ import annotations

import os
from pathlib import Path

from config import Settings
from flink_jobs.launch import latest_checkpoint, prune_checkpoint_runs, restore_latest, stale_runs


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


def _run(checkpoint_dir: Path, n: int, completed_age_s: float | None) -> Path:
    """A run's folder (a job id), with a completed checkpoint ``completed_age_s`` old, or none."""
    run = checkpoint_dir / f"{n:032x}"
    (run / "shared").mkdir(parents=True)
    if completed_age_s is not None:
        _checkpoint(run / f"chk-{n}", age_s=completed_age_s)
    return run


def test_earlier_runs_beyond_the_newest_kept_are_stale(tmp_path: Path) -> None:
    oldest, old, newer, newest = (_run(tmp_path, n, age) for n, age in ((1, 400), (2, 300), (3, 200), (4, 100)))
    failed_early = _run(tmp_path, 5, None)  # never completed a checkpoint, long ago
    os.utime(failed_early, (1_700_000_000 - 500, 1_700_000_000 - 500))
    starting = _run(tmp_path, 6, None)  # no checkpoint yet, newer than the kept ones: maybe running
    os.utime(starting, (1_700_000_000 - 10, 1_700_000_000 - 10))
    (tmp_path / "not-a-job-id").mkdir()
    assert stale_runs(tmp_path, keep=2) == [oldest, old, failed_early]
    assert stale_runs(tmp_path, keep=2, protect=old / "chk-2") == [oldest, failed_early]  # being restored
    assert stale_runs(tmp_path, keep=0) == [] and stale_runs(tmp_path, keep=5) == []
    assert stale_runs(tmp_path / "missing", keep=2) == []
    assert {newer, newest, starting}.isdisjoint(stale_runs(tmp_path, keep=2))


def test_pruning_deletes_the_stale_runs_and_counts_the_bytes(tmp_path: Path) -> None:
    settings = Settings(checkpoint_dir=tmp_path, job_name="live", checkpoint_runs_kept=1)
    old = _run(settings.checkpoint_path(), 1, completed_age_s=200)
    (old / "chk-1" / "state").write_bytes(b"x" * 1000)
    newest = _run(settings.checkpoint_path(), 2, completed_age_s=100)
    assert prune_checkpoint_runs(settings, restore_from=None) == ([old], 1000)
    assert not old.exists() and newest.exists()
    assert prune_checkpoint_runs(settings, restore_from=None) == ([], 0)
