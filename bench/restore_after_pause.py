"""A job restored after a pause longer than the session gap and the impression TTL: how long until it has caught up.

    .venv/bin/python bench/restore_after_pause.py                    # 300,000 events, pause, 150,000 events
    .venv/bin/python bench/restore_after_pause.py --before 540000     # the state of a 3-minute `pulse demo`

What `pulse demo` meets when run again the next day, made repeatable (ADR 0007, eighteenth and
nineteenth sessions). Into fresh topics: ``--before`` synthetic events whose event times follow
each other at ``--rate`` per second (as the demo's stream does); the job (``pulse job run``) learns
them and is stopped with SIGTERM (its state in its checkpoints). Then ``--after`` events whose event
time starts ``--pause-min`` minutes after the first part's last one, and ``pulse job run --restore
latest``: on its first watermark every session of the first part closes and every pending impression
expires. Printed: seconds from the restored job's start until every user's count is in Redis, and the
events/s of the second part over the span of the users' writes (the first is a session closed by that
first watermark). Every user's count is checked (a wrong one fails the run). Compare two versions of the
job by running this script from an export of each, in turns (bench/README.md).
Uses PULSE_KAFKA_BOOTSTRAP / PULSE_REDIS_URL when set, else ``pulse up``'s local services.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from bench.job_backlog import drained, forget, fresh_settings
from config import REPO_ROOT, Settings
from infra.local.process import wait_for_group
from producers.producer import EventProducer
from producers.sources import open_source
from producers.topics import ensure_topics
from schemas import Event


def timed(events: list[Event], start_ms: int, rate: float) -> Iterator[Event]:
    """``events`` with event times from ``start_ms``, ``rate`` per second (the demo's stream: time = now)."""
    for n, event in enumerate(events):
        yield dataclasses.replace(event, event_time_ms=start_ms + int(n * 1000 / rate))


def run_job(settings: Settings, restore: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pulse", "job", "run", "--restore", restore], cwd=REPO_ROOT,
                            env={**os.environ, **settings.to_env()}, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    wait_for_group(proc.pid, timeout_s=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=int, default=300_000, help="events the job learns before the pause")
    parser.add_argument("--after", type=int, default=150_000, help="events after the pause")
    parser.add_argument("--rate", type=float, default=3000.0, help="events per second of event time")
    parser.add_argument("--pause-min", type=float, default=40.0, help="event-time pause (default: over the 30 min)")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()

    base = Settings()
    if base.kafka_bootstrap == Settings.model_fields["kafka_bootstrap"].default:
        from infra.local.services import LocalServices

        LocalServices(base).up()
    settings = fresh_settings(base, uuid.uuid4().hex[:6], 1)
    ensure_topics(settings)
    events = list(open_source("synthetic", seed=args.seed, limit=args.before + args.after))
    first, second = events[:args.before], events[args.before:]
    start_ms = time.time_ns() // 1_000_000 - 3 * 3600 * 1000
    resume_ms = start_ms + int(args.before * 1000 / args.rate) + int(args.pause_min * 60_000)
    out_dir = Path(tempfile.mkdtemp(prefix="restore-after-pause-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with EventProducer(settings) as producer:
            for _ in producer.send_all(timed(first, start_ms, args.rate)):
                pass
        proc = run_job(settings, "none", out_dir / "job.log")
        span, wrong = drained(settings, Counter(e.user_id for e in first), args.timeout_s)
        if wrong:
            raise SystemExit(f"before the pause: {wrong} users have wrong counts; logs in {out_dir}")
        time.sleep(settings.checkpoint_interval_ms / 1000 * 2)  # a checkpoint after the last write
        stop(proc)
        print(f"before the pause: {len(first):,} events learned ({args.before / span:,.0f} ev/s), job stopped",
              flush=True)
        with EventProducer(settings) as producer:
            for _ in producer.send_all(timed(second, resume_ms, args.rate)):
                pass
        started = time.monotonic()
        proc = run_job(settings, "latest", out_dir / "job.log")
        want = Counter(e.user_id for e in events)
        span, wrong = drained(settings, want, args.timeout_s)
        caught_up = time.monotonic() - started
        print(f"restored after a {args.pause_min:.0f}-minute pause: {len(second):,} events, "
              f"{len({e.user_id for e in second}):,} users; all learned {caught_up:.1f} s after the start "
              f"(JVM start-up included); {args.after / span:,.0f} ev/s over the write span ({span:.1f} s)"
              f"{'' if wrong == 0 else f'  WRONG COUNTS for {wrong} users'}", flush=True)
        if wrong:
            raise SystemExit(f"{wrong} users have wrong counts; logs in {out_dir}")
    finally:
        if proc is not None:
            stop(proc)
        forget(settings)


if __name__ == "__main__":
    main()
