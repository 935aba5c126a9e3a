"""Recovery: SIGKILL the job process mid-stream, restart it from the latest checkpoint -> exact counts."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import redis as redis_lib

from config import REPO_ROOT, Settings
from flink_jobs.launch import latest_checkpoint
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas.redis_keys import Envelope, RedisKeys
from serving.sync_reads import user_part
from tests.integration.jobs import inherited_env, job_command, run_job_until, start_job, stop_job, tail

pytestmark = pytest.mark.flink_job

N_EVENTS = 20_000
LEARNABLE = {"view", "click", "add_to_cart", "purchase", "rating"}


def test_sigkill_mid_stream_then_restore_loses_and_doubles_nothing(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"checkpoint_dir": tmp_path / "chk", "checkpoint_interval_ms": 2000})
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=33, limit=N_EVENTS))
    with EventProducer(settings) as producer:
        for _ in producer.send_all(events):
            pass
    assert producer.report.produced == N_EVENTS
    want: dict[str, Counter[str]] = defaultdict(Counter)
    for event in events:
        want[event.user_id][event.type.value] += 1
    n_learnable = sum(1 for e in events if e.type.value in LEARNABLE)

    client = redis_lib.Redis.from_url(settings.redis_url)
    keys = RedisKeys(settings.redis_prefix)

    def learned() -> int:
        model = Envelope.from_fields_or_none(client.hgetall(keys.model("mf")))
        return 0 if model is None else int(model.payload["events_learned"])

    # 1. Run until a checkpoint is complete and part of the stream is processed, then SIGKILL.
    log = tmp_path / "job.log"
    first = start_job(settings, "--restore", "none", log=log)
    deadline = time.monotonic() + 240
    while not (latest_checkpoint(settings.checkpoint_path()) and learned() > 1000):
        assert first.poll() is None, f"job exited early:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no checkpoint or progress in time:\n{tail(log)}"
        time.sleep(0.5)
    stop_job(first, signal.SIGKILL)
    killed_at = learned()
    assert 0 < killed_at < n_learnable, "the kill must land mid-stream"
    checkpoint = latest_checkpoint(settings.checkpoint_path())
    assert checkpoint is not None

    # 2. Restart: `pulse job run` resumes from the latest retained checkpoint by default.
    def counts_exact() -> bool:
        for user, counts in want.items():
            stored = user_part(client, keys, user, "counts")
            if stored is None or stored.payload["counts"] != dict(counts):
                return False
        return True

    run_job_until(settings, counts_exact, "--restore", str(checkpoint), log=tmp_path / "job-restored.log")
    print(f"\nkilled after {killed_at} learned events; restored from {checkpoint.name}; "
          f"{len(want)} users' counts exact")
    assert "restoring from" in (tmp_path / "job-restored.log").read_text()

    # 3. A checkpoint with a state file gone (as a job killed while Flink discarded it leaves it):
    # `pulse job run` fails with one error naming the missing file and the way out, no trace. Small
    # state is kept inside _metadata, so the largest state file of any complete checkpoint so far is
    # taken (a checkpoint the stopped job left half written has no _metadata and is no checkpoint).
    state_files = sorted((p for p in settings.checkpoint_path().glob("*/chk-*/*")
                          if p.name != "_metadata" and (p.parent / "_metadata").exists()),
                         key=lambda p: p.stat().st_size)
    assert state_files, f"no state file beside _metadata under {settings.checkpoint_path()}"
    gone = state_files[-1]
    gone.unlink()
    broken = subprocess.run(job_command("--restore", str(gone.parent)), cwd=REPO_ROOT, capture_output=True,
                            text=True, env={**inherited_env(), **settings.to_env(), "PULSE_RESTART_ATTEMPTS": "0"},
                            timeout=180, check=False)
    errors = [line for line in broken.stderr.splitlines() if line.startswith("error:")]
    assert broken.returncode == 1 and "Traceback" not in broken.stderr, broken.stderr[-3000:]
    assert len(errors) == 1 and "FileNotFoundException" in errors[0] and gone.name in errors[0], errors
    assert "--restore none" in broken.stderr and "Flink's log" in broken.stderr, broken.stderr[-3000:]
    print(f"{gone.parent.name} with {gone.name} gone: {errors[0]}")


def test_ctrl_c_stops_the_job_with_one_line_and_no_trace(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"checkpoint_dir": tmp_path / "chk", "checkpoint_interval_ms": 1000})
    ensure_topics(settings)
    log = tmp_path / "job.log"
    # As from a terminal: SIGINT not ignored (a test run started in the background inherits it ignored,
    # and Python and the JVM then install no handler for it).
    env = {**inherited_env(), **settings.to_env()}
    job = subprocess.Popen(job_command("--restore", "none"), cwd=REPO_ROOT, env=env, stdout=log.open("ab"),
                           stderr=subprocess.STDOUT, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(settings.checkpoint_path()) is None:  # running: a checkpoint completed
            assert job.poll() is None, f"job exited early:\n{tail(log)}"
            assert time.monotonic() < deadline, f"no checkpoint in time:\n{tail(log)}"
            time.sleep(0.5)
        os.killpg(job.pid, signal.SIGINT)  # a terminal's Ctrl-C: the whole foreground group, the JVM too
        code = job.wait(timeout=60)
    finally:
        stop_job(job, signal.SIGKILL)  # only if it is still there
    output = log.read_text()
    assert code == 130 and "Traceback" not in output, output[-3000:]
    assert output.strip().splitlines()[-1] == "stopped; `pulse job run` resumes from the newest checkpoint", output
    print(f"Ctrl-C: exit {code}, {output.strip().splitlines()[-1]!r}")
