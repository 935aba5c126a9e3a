"""The job's per-event Python without Flink: decode and the user stage's steps of two code trees, in turns (issue 15).

The job's throughput on this 2-core VM moves 10-30 % between runs minutes apart (bench/README.md),
so ``job_backlog.py`` cannot show a change of a few microseconds per event. This replays the same
synthetic events through what the job runs in Python for every event on its way to the user's
Redis value: the codec's decode and checks (``EventCodec.decode_fields``), the event rebuilt
(``Event.from_fields``), and the user stage's pure steps (``UserSteps.on_event``: counts, session,
reward join, learning; ``UserSteps.on_refresh`` every 4th event of a user: the top-k and the
user's Redis value encoded). One process per tree and round (``python -c`` with the tree as its
working directory, so it imports that tree's packages), CPU time, best of ``--passes`` passes;
the rounds alternate the trees' order. Prints each tree's median and rounds, and the difference.

Left out, so not measured here: the other stages (item owners, popularity, bandits, the Redis
sink), PyFlink's per-batch plumbing and keyed state, messages between stages, the Redis client.

    .venv/bin/python bench/steps_ab.py --baseline HEAD~3                    # that commit against the working tree
    .venv/bin/python bench/steps_ab.py /tmp/a /tmp/b --events 60000 --rounds 5

``--baseline REV`` extracts ``git archive REV`` into a temporary folder. Needs no service.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.code_trees import add_tree_arguments, print_medians, trees_to_compare

#: Run in each tree (``python -c``, working directory = the tree): prints CPU microseconds per event.
REPLAY = """
import sys, time
from config import Settings
from flink_jobs.pipeline import learner_shape
from flink_jobs.user_steps import UserStageConfig, UserSteps
from online_models.bandits import BanditScope
from producers.sources import open_source
from schemas.codec import EventCodec
from schemas.events import Event
from schemas.redis_keys import RedisKeys

n_events, passes = int(sys.argv[1]), int(sys.argv[2])
settings = Settings()
config = UserStageConfig(mf=learner_shape(settings), keys=RedisKeys("steps-ab"),
                         scopes=tuple(BanditScope(s) for s in settings.bandit_scopes),
                         session_gap_ms=settings.session_gap_ms, impression_ttl_ms=settings.impression_ttl_ms,
                         top_k=settings.top_k, score_refresh_ms=settings.score_refresh_ms, redis_shards=1)
codec = EventCodec()
events = list(open_source("synthetic", seed=1, limit=n_events))
payloads = [codec.encode(e) for e in events]
now_ms = max(e.event_time_ms for e in events) + 1000
best = float("inf")
for _ in range(passes):
    steps = UserSteps(config, 0)
    records, impressions, since = {}, {}, {}
    started = time.process_time()
    for payload in payloads:
        event = Event.from_fields(codec.decode_fields(payload, now_ms))
        user = event.user_id
        record, _ = steps.on_event(records.get(user), event, impressions.setdefault(user, {}))
        if record is None:
            records.pop(user, None)
            continue
        records[user] = record
        seen = since.get(user, 0) + 1
        if seen >= 4:
            steps.on_refresh(user, record)
            seen = 0
        since[user] = seen
    best = min(best, time.process_time() - started)
print(1e6 * best / len(payloads))
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tree_arguments(parser)
    parser.add_argument("--events", type=int, default=40_000, help="Synthetic events replayed per pass")
    parser.add_argument("--passes", type=int, default=3, help="Passes per round (the fastest counts)")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds per tree, in turns")
    return parser


def replay(tree: Path, events: int, passes: int) -> float:
    """CPU microseconds per event in ``tree`` (its own packages imported), best of ``passes``."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", REPLAY, str(events), str(passes)], cwd=tree, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the replay failed in {tree}:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="pulse-steps-ab-") as scratch_dir:
        trees = trees_to_compare(args, parser, Path(scratch_dir), holds="flink_jobs/user_steps.py")
        rounds: dict[Path, list[float]] = {tree: [] for tree in trees}
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}", file=sys.stderr)
            for tree in trees if n % 2 == 0 else trees[::-1]:
                rounds[tree].append(replay(tree, args.events, args.passes))
    print(f"decode + the user stage's steps, {args.events:,} synthetic events, best of {args.passes} passes a round, "
          f"{args.rounds} rounds per tree in turns (load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after)")
    print_medians(args, trees, rounds, "us/event")


if __name__ == "__main__":
    main()
